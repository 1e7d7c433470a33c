"""Aggregation rules over a stack of client updates: the pieces strategies compose.

(Placeholder: the rules are being filled in; `AGGREGATORS` names them.)
"""

from __future__ import annotations

AGGREGATORS: tuple[str, ...] = ("mean",)
"""Names of the rules an asynchronous strategy's `aggregator` option may take."""
