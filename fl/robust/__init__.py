"""Robust aggregation primitives in pure torch: geometric median (smoothed Weiszfeld / RFA,
Vardi–Zhang) and block-coordinate geometric median descent (BGMD)."""

from fl.robust.bgmd import BlockGMResult, block_geometric_median, select_block
from fl.robust.geomedian import GMResult, geometric_median

__all__ = [
    "BlockGMResult",
    "GMResult",
    "block_geometric_median",
    "geometric_median",
    "select_block",
]
