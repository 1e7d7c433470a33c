"""The server loops of an experiment: synchronous rounds (`run_rounds`, Flower's
`Strategy.start` plus bookkeeping) and asynchronous updates (`run_async`, the strategy's pump
plus bookkeeping), sharing their clock, rows, evaluation and checkpoint cadence (`common`)."""

from fl.loops.asynchronous import AsyncSettings, run_async
from fl.loops.common import LoopResult, first_time_reaching
from fl.loops.synchronous import LoopSettings, run_rounds

__all__ = [
    "AsyncSettings",
    "LoopResult",
    "LoopSettings",
    "first_time_reaching",
    "run_async",
    "run_rounds",
]
