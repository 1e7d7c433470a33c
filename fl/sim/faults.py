"""Fault injection: ClientApps that crash, or reply with NaN, wrongly shaped or malformed content.

Faults are not attacks: every node may hit one, independently, with the configured probability
per training task. They exercise what a long study must survive (bad replies are rejected and
counted, never aggregated):

- ``crash_prob``: the ClientApp raises mid-training (the grid records the error text; no reply);
- ``nan_prob``: the reply's model is all NaN;
- ``corrupt_prob``: the reply's first array has the wrong shape (a truncated payload);
- ``bad_metrics_prob``: the reply lacks ``num-examples`` or reports a negative one.

Dropouts (a device that goes offline mid-round) and stragglers past the deadline come from the
device model (`[devices] availability`, `failure_prob`, `round_timeout_s`). Draws are seeded by
(seed, node, the node's task count), so they do not depend on execution order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fl.protocol import keys
from fl.schema import ConfigError

_FAULT_STREAM = 0xFA17


@dataclass(frozen=True)
class FaultConfig:
    """Per-task probabilities of each fault (all 0: no fault injection)."""

    crash_prob: float = 0.0  # the ClientApp raises mid-training (no reply, error recorded)
    nan_prob: float = 0.0  # the reply's model is all NaN
    corrupt_prob: float = 0.0  # the reply's first array has the wrong shape
    bad_metrics_prob: float = 0.0  # the reply lacks num-examples or reports a negative one

    def __post_init__(self) -> None:
        for name in ("crash_prob", "nan_prob", "corrupt_prob", "bad_metrics_prob"):
            value = getattr(self, name)
            if not (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and 0 <= value <= 1
            ):
                raise ConfigError(f"faults.{name}", value, "a probability in [0, 1]")
        total = self.crash_prob + self.nan_prob + self.corrupt_prob + self.bad_metrics_prob
        if total > 1:
            raise ConfigError(
                "faults",
                dataclasses.asdict(self),
                f"probabilities that sum to at most 1 (they sum to {total:g})",
            )

    @property
    def active(self) -> bool:
        """Whether any fault can happen."""
        return self.crash_prob + self.nan_prob + self.corrupt_prob + self.bad_metrics_prob > 0


class InjectedCrash(RuntimeError):
    """The exception a crashing ClientApp raises."""


class FaultyClientApp:
    """Wraps a ClientApp; each training task hits at most one fault, drawn per
    (seed, node, task count)."""

    def __init__(
        self, app: Callable[[Message, Context], Message], cfg: FaultConfig, node: int, seed: int
    ) -> None:
        self.app = app
        self.cfg = cfg
        self.node = int(node)
        self.seed = int(seed)
        self.omniscient = bool(getattr(app, "omniscient", False))

    def observe(self, *args: object, **kwargs: object) -> None:
        """Pass the grid's observations on to a wrapped omniscient attacker."""
        if hasattr(self.app, "observe"):
            self.app.observe(*args, **kwargs)

    def _draw(self, context: Context) -> str:
        rec = context.state.config_records.get("fl.faults")
        count = int(rec["tasks"]) if rec is not None else 0  # type: ignore[arg-type]
        context.state["fl.faults"] = ConfigRecord({"tasks": count + 1})
        u = float(np.random.default_rng((_FAULT_STREAM, self.seed, self.node, count)).random())
        c = self.cfg
        odds = (
            ("crash", c.crash_prob),
            ("nan", c.nan_prob),
            ("corrupt", c.corrupt_prob),
            ("bad_metrics", c.bad_metrics_prob),
        )
        for kind, p in odds:
            if u < p:
                return kind
            u -= p
        return "none"

    def __call__(self, msg: Message, context: Context) -> Message:
        if not msg.metadata.message_type.startswith("train"):
            return self.app(msg, context)
        fault = self._draw(context)
        if fault == "crash":
            raise InjectedCrash(f"injected crash on node {self.node}")
        reply = self.app(msg, context)
        if fault == "none" or reply.has_error():
            return reply
        content = RecordDict()
        for key, rec in reply.content.items():
            if isinstance(rec, ArrayRecord) and fault in ("nan", "corrupt"):
                rec = _broken(rec, fault)
            elif isinstance(rec, MetricRecord) and fault == "bad_metrics":
                metrics = dict(rec)
                if self.node % 2:
                    metrics.pop(keys.NUM_EXAMPLES, None)
                else:
                    metrics[keys.NUM_EXAMPLES] = -1
                rec = MetricRecord(metrics)
            content[key] = rec
        return Message(content=content, reply_to=msg)


def _broken(rec: ArrayRecord, fault: str) -> ArrayRecord:
    out = {}
    for i, (k, a) in enumerate(rec.items()):
        arr = a.numpy()
        if fault == "nan" and arr.dtype.kind == "f":
            arr = np.full_like(arr, np.nan)
        elif fault == "corrupt" and i == 0:
            arr = arr.reshape(-1)[: max(arr.size - 1, 0)].copy()  # a truncated payload
        out[k] = Array(arr)
    return ArrayRecord(out)
