"""Server strategies: Flower message-API strategies, importable into any Flower app.

Synchronous: `TiFL` (tier-based selection), `GeometricMedian` (RFA), `BlockGeometricMedian`
(BGMD) and `RobustAggregation` (any rule of `fl.strategies.aggregation`, then server SGD with
momentum and weight decay, `ServerSGD`). Asynchronous (run by their own `start`, a push/pull
loop over any Flower Grid): `AdaSGD` (FLeet), `DynSGD`, `AsyncSGD`, `FedAsync` and `FedBuff`.
`WithProfiler` gives any strategy I-Prof's per-node batch sizes. The registry
(`fl.strategies.registry`) also exposes every stock Flower strategy by name for configs.
"""

from fl.strategies.adasgd import AdaSGD, AsyncSGD, DynSGD
from fl.strategies.asynchronous import AsyncStrategy
from fl.strategies.fedasync import FedAsync
from fl.strategies.fedbuff import FedBuff
from fl.strategies.geomedian import BlockGeometricMedian, GeometricMedian
from fl.strategies.robust import RobustAggregation
from fl.strategies.server_optimizer import ServerSGD
from fl.strategies.sized import WithProfiler
from fl.strategies.tifl import TiFL

__all__ = [
    "AdaSGD",
    "AsyncSGD",
    "AsyncStrategy",
    "BlockGeometricMedian",
    "DynSGD",
    "FedAsync",
    "FedBuff",
    "GeometricMedian",
    "RobustAggregation",
    "ServerSGD",
    "TiFL",
    "WithProfiler",
]
