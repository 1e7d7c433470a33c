"""Server strategies: Flower message-API strategies, importable into any Flower app.

`TiFL` (tier-based selection). The registry (`fl.strategies.registry`) also exposes every
stock Flower strategy by name for configs.
"""

from fl.strategies.tifl import TiFL

__all__ = ["TiFL"]
