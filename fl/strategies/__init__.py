"""Server strategies: Flower message-API strategies, importable into any Flower app.

`TiFL` (tier-based selection), `GeometricMedian` (RFA) and `BlockGeometricMedian` (BGMD).
The registry (`fl.strategies.registry`) also exposes every
stock Flower strategy by name for configs.
"""

from fl.strategies.geomedian import BlockGeometricMedian, GeometricMedian
from fl.strategies.tifl import TiFL

__all__ = ["BlockGeometricMedian", "GeometricMedian", "TiFL"]
