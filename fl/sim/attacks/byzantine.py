"""The Byzantine wrapper: a malicious node's ClientApp, running its attack on every train task
and telling its lies (`fl.sim.attacks.lies`, and the stale replay here) in the reply."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message import make_message

from fl.client.poisoning import data_attack_config
from fl.client.training import derive_seed, seeded_generator
from fl.protocol import keys
from fl.sim.attacks.config import (
    _REPLAY_KEY,
    _STATE_KEY,
    _UPDATE_STREAM,
    REPLY_LIES,
    AttackConfig,
    _round_half_up,
    is_data_attack,
    is_omniscient,
)
from fl.sim.attacks.lies import lie_in_metrics
from fl.sim.attacks.updates import (
    additive_noise,
    alie,
    alie_z,
    gaussian_update,
    ipm,
    minmax,
    sign_flip,
)


# ------------------------------------------------------------------- message plumbing
def _is_train(message: Message) -> bool:
    return message.metadata.message_type.split(".")[0] == "train"


def _first_arrays(content: RecordDict) -> tuple[str, ArrayRecord] | None:
    for name, rec in content.array_records.items():
        return name, rec
    return None


def _attacked_keys(glob: ArrayRecord, model: ArrayRecord) -> list[str]:
    """Keys of the reply's floating-point arrays that the global model has with equal shape."""
    return [
        k
        for k, a in model.items()
        if np.dtype(a.dtype).kind == "f" and k in glob and tuple(glob[k].shape) == tuple(a.shape)
    ]


def _flat(record: ArrayRecord, keys: Sequence[str]) -> torch.Tensor:
    """The arrays at `keys`, flattened and concatenated, as float64."""
    parts = [torch.from_numpy(record[k].numpy().astype(np.float64).reshape(-1)) for k in keys]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def flat_update(instruction: Message, reply: Message, keys: Sequence[str]) -> torch.Tensor:
    """δ = w − g over `keys`, flattened (float64): the update a train reply carries."""
    g = _first_arrays(instruction.content)
    w = _first_arrays(reply.content)
    if g is None or w is None:
        raise ValueError("a train instruction and its reply must each carry an ArrayRecord")
    missing = [k for k in keys if k not in g[1] or k not in w[1]]
    if missing:
        raise ValueError(f"update lacks arrays {missing[:3]}: not the same model")
    return _flat(w[1], keys) - _flat(g[1], keys)


def _rebuild(
    glob: ArrayRecord, model: ArrayRecord, keys: Sequence[str], delta: torch.Tensor
) -> ArrayRecord:
    """g + δ' at `keys` (cast to each array's dtype); other arrays copied from the reply."""
    out = ArrayRecord()
    offsets: dict[str, tuple[int, int]] = {}
    start = 0
    for k in keys:
        size = int(np.prod(model[k].shape, dtype=np.int64))
        offsets[k] = (start, start + size)
        start += size
    for k, arr in model.items():
        if k not in offsets:
            out[k] = arr
            continue
        lo, hi = offsets[k]
        g = glob[k].numpy().astype(np.float64)
        new = g + delta[lo:hi].numpy().reshape(g.shape)
        out[k] = Array(np.ascontiguousarray(new.astype(np.dtype(arr.dtype))))
    return out


def _next_call(context: Context) -> int:
    """This node's attack-call counter, kept in its persistent state."""
    rec = context.state.config_records.get(_STATE_KEY)
    calls = int(rec["calls"]) if rec is not None else 0  # type: ignore[arg-type]
    context.state[_STATE_KEY] = ConfigRecord({"calls": calls + 1})
    return calls


def _remember_update(
    context: Context, glob: ArrayRecord, model: ArrayRecord, keys: Sequence[str]
) -> None:
    """Keep δ₀ = w − g at `keys` (float64, per array) in the node's persistent state."""
    context.state[_REPLAY_KEY] = ArrayRecord(
        {
            k: Array(model[k].numpy().astype(np.float64) - glob[k].numpy().astype(np.float64))
            for k in keys
        }
    )


def _replayed(
    context: Context, glob: ArrayRecord, model: ArrayRecord, keys: Sequence[str]
) -> ArrayRecord | None:
    """g + δ₀ (the remembered first update on the current model), or None if none is kept.

    Arrays that δ₀ lacks (or has with another shape) are the honest reply's."""
    stored = context.state.array_records.get(_REPLAY_KEY)
    if stored is None:
        return None
    use = [k for k in keys if k in stored and tuple(stored[k].shape) == tuple(model[k].shape)]
    parts = [torch.from_numpy(stored[k].numpy().reshape(-1)) for k in use]
    delta = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    return _rebuild(glob, model, use, delta)


def _server_round(message: Message) -> int:
    """The instruction's "server-round" (−1 if the strategy sent none)."""
    for rec in message.content.config_records.values():
        if keys.SERVER_ROUND in rec:
            return int(rec[keys.SERVER_ROUND])  # type: ignore[arg-type]
    return -1


def _with_config(message: Message, extra: Mapping[str, Any]) -> Message:
    """A copy of the instruction whose (first) ConfigRecord also holds `extra`.

    The original message and its records are left untouched (they may be shared).
    """
    content = RecordDict()
    for name, rec in message.content.items():
        content[name] = rec
    names = list(message.content.config_records)
    name = names[0] if names else "config"
    base = message.content.config_records[name] if names else ConfigRecord()
    content[name] = ConfigRecord({**dict(base), **extra})
    return make_message(metadata=copy.copy(message.metadata), content=content)


# ------------------------------------------------------------------------------ the wrapper
class ByzantineClientApp:
    """A malicious node: wraps an honest ClientApp callable and corrupts what it does.

    - Update attacks run the honest app, then replace the reply's model ``w`` (its first
      ArrayRecord) by ``g + attack(δ)``, δ = w − g, g the instruction's (first) ArrayRecord.
      Keys, order, dtypes are preserved; non-floating arrays and metrics are left as the
      honest app produced them.
    - Data attacks add the ``attack-*`` keys (`data_attack_config`) to a copy of the train
      instruction's ConfigRecord (created as "config" if there is none) and return the honest
      app's reply: the project's ClientApp poisons its own data with `corrupt_data`.
    - Omniscient attacks (alie, ipm, minmax) use the honest (instruction, reply) pairs passed
      to `observe` before the call; each update is taken against its own instruction's model
      (honest nodes may have trained on older models in asynchronous loops). An observation is
      used by the next train call only. With nothing observed, the node's own honest update
      is the only "honest" update: ALIE and min-max then send it unchanged (σ = 0, no spread)
      and IPM sends −ε·δ.
    - Lies (``cfg.lies``) are told after the attack, on any kind (``"none"`` included):
      ``stale_replay`` keeps δ₀ = w − g of the node's first train reply that carries a model
      (after the update attack, float64, in ``context.state["fl.attack.replay"]``) and
      replaces the model of every later train reply by g + δ₀ (g: that task's model; the
      honest app still runs, for the reply's metrics and timing, but no update attack is
      computed); then `lie_in_metrics` forges and/or inflates the metrics (see
      `fl.sim.attacks.lies`). ``fast_lane`` is not the wrapper's: see `fast_lane`.
    - Evaluate/query messages, and error replies, pass through unchanged.

    Noise is seeded by (seed, node_index, server round, this node's train-call count), the
    count being kept in ``context.state["fl.attack"]``. The lies draw no randomness.
    """

    omniscient: bool

    def __init__(
        self,
        app: Callable[[Message, Context], Message],
        cfg: AttackConfig,
        node_index: int,
        seed: int,
    ) -> None:
        self.app = app
        self.cfg = cfg
        self.node_index = int(node_index)
        self.seed = int(seed)
        self.omniscient = is_omniscient(cfg)
        self._honest: list[tuple[Message, Message]] = []
        self._num_byzantine: int | None = None

    @property
    def _lies(self) -> tuple[str, ...]:
        """The lies told in replies (a property: wrappers pickled before lies existed load)."""
        return tuple(lie for lie in self.cfg.lies if lie in REPLY_LIES)

    def observe(
        self, honest: Sequence[tuple[Message, Message]], *, num_byzantine: int | None = None
    ) -> None:
        """Remember this round's honest (instruction, reply) pairs for the next train call.

        `num_byzantine` is the number f of malicious nodes in the same round (for ALIE's z with
        n = len(honest) + f); if omitted, f = max(1, round(h·fraction / (1 − fraction))).
        Error replies and non-train pairs are ignored.
        """
        self._honest = [
            (ins, rep)
            for ins, rep in honest
            if _is_train(ins) and not rep.has_error() and rep.has_content()
        ]
        self._num_byzantine = num_byzantine

    def __call__(self, message: Message, context: Context) -> Message:
        """Run the honest app on (possibly poisoned) instructions, corrupt its reply, lie."""
        cfg = self.cfg
        if not _is_train(message) or not (cfg.kind != "none" or self._lies):
            return self.app(message, context)
        if cfg.kind == "none":
            reply = self.app(message, context)
        elif is_data_attack(cfg):
            reply = self.app(_with_config(message, data_attack_config(cfg)), context)
        else:
            reply = self._update_attack(message, context)
        if self._lies and not reply.has_error() and reply.has_content():
            if "stale_replay" in self._lies:
                self._stale_replay(message, reply, context)
            lie_in_metrics(reply, self._lies, cfg.inflate_factor)
        return reply

    def _update_attack(self, message: Message, context: Context) -> Message:
        """The honest reply with its model replaced by g + attack(δ)."""
        observed, f = self._honest, self._num_byzantine
        self._honest, self._num_byzantine = [], None
        reply = self.app(message, context)
        if reply.has_error() or not reply.has_content():
            return reply
        if "stale_replay" in self._lies and _REPLAY_KEY in context.state.array_records:
            return reply  # the model is replaced by the replayed δ₀ anyway
        g = _first_arrays(message.content)
        w = _first_arrays(reply.content)
        if g is None or w is None:
            return reply
        keys = _attacked_keys(g[1], w[1])
        own = flat_update(message, reply, keys)
        seed = derive_seed(
            self.seed, _UPDATE_STREAM, self.node_index, _server_round(message), _next_call(context)
        )
        new = self._attack(own, observed, f, keys, seed)
        content = RecordDict()
        for name, rec in reply.content.items():
            content[name] = _rebuild(g[1], w[1], keys, new) if name == w[0] else rec
        reply.content = content
        return reply

    def _stale_replay(self, message: Message, reply: Message, context: Context) -> None:
        """Remember the first update the node sends; replace every later one by it."""
        g = _first_arrays(message.content)
        w = _first_arrays(reply.content)
        if g is None or w is None:
            return
        keys = _attacked_keys(g[1], w[1])
        replayed = _replayed(context, g[1], w[1], keys)
        if replayed is None:
            _remember_update(context, g[1], w[1], keys)
            return
        content = RecordDict()
        for name, rec in reply.content.items():
            content[name] = replayed if name == w[0] else rec
        reply.content = content

    def _attack(
        self,
        own: torch.Tensor,
        observed: Sequence[tuple[Message, Message]],
        num_byzantine: int | None,
        keys: Sequence[str],
        seed: int,
    ) -> torch.Tensor:
        """The malicious update δ' for this call."""
        cfg = self.cfg
        if cfg.kind == "sign_flip":
            return sign_flip(own, cfg.scale)
        if cfg.kind == "gaussian":
            return gaussian_update(own, cfg.std, seeded_generator(seed))
        if cfg.kind == "additive":
            return additive_noise(own, cfg.std, seeded_generator(seed))
        honest = (
            torch.stack([flat_update(ins, rep, keys) for ins, rep in observed])
            if observed
            else own.unsqueeze(0)
        )
        if cfg.kind == "ipm":
            return ipm(honest, cfg.ipm_epsilon)
        if cfg.kind == "minmax":
            return minmax(honest, cfg.minmax_direction)
        if cfg.kind == "alie":
            return alie(honest, self._alie_z(honest.shape[0], num_byzantine))
        raise ValueError(f"attack kind {cfg.kind!r} has no update formula")

    def _alie_z(self, h: int, num_byzantine: int | None) -> float:
        """The configured z, or Baruch et al.'s z for n = h + f nodes of which f malicious."""
        if self.cfg.alie_z is not None:
            return float(self.cfg.alie_z)
        f = num_byzantine
        if f is None:
            frac = self.cfg.fraction
            f = max(1, _round_half_up(h * frac / (1 - frac)))
        return alie_z(h + f, f)
