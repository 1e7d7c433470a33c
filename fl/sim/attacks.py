"""Byzantine nodes: attacks that wrap a node's ClientApp, so every aggregator meets the same attack.

Three families (see research/simulators.md §6 and research/algorithms.md §3.3):

- **Update attacks** (``gaussian``, ``sign_flip``, ``additive``) change the model a malicious
  node replies with. With ``g`` the global model it was sent and ``w`` its honest result,
  ``δ = w − g`` and the reply becomes ``g + attack(δ)``.
- **Omniscient update attacks** (``alie``, ``ipm``, ``minmax``) also see the round's honest
  updates (the grid calls `ByzantineClientApp.observe` before running the node).
- **Data attacks** (``label_flip``, ``feature_noise``, ``backdoor``) poison the node's own
  training data: the wrapper adds ``attack-*`` keys to the instruction's ConfigRecord and the
  project's ClientApp applies `corrupt_data` before training.

Which nodes are malicious is fixed for the whole run (`malicious_nodes`). All randomness is
seeded from (run seed, node index, server round, the node's call count), never from global RNG
state, so results do not depend on the order in which nodes execute.

Update attacks change floating-point arrays only (weights, BatchNorm statistics); integer
buffers such as ``num_batches_tracked`` pass through from the honest reply. Keys, order,
shapes and dtypes of the reply's arrays are preserved; arithmetic is done in float64.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message import make_message

from fl.schema import ConfigError
from fl.training import derive_seed

ATTACKS: tuple[str, ...] = (
    "none",
    "gaussian",
    "sign_flip",
    "additive",
    "label_flip",
    "feature_noise",
    "backdoor",
    "alie",
    "ipm",
    "minmax",
)
UPDATE_ATTACKS: tuple[str, ...] = ("gaussian", "sign_flip", "additive")
OMNISCIENT_ATTACKS: tuple[str, ...] = ("alie", "ipm", "minmax")
DATA_ATTACKS: tuple[str, ...] = ("label_flip", "feature_noise", "backdoor")
NOISE_KINDS: tuple[str, ...] = ("additive", "impulse")
MINMAX_DIRECTIONS: tuple[str, ...] = ("std", "unit", "sign")

IMPULSE_AMOUNT = 0.95
"""Salt-and-pepper: fraction of input values replaced (BGMD's severity 5; half 1s, half 0s)."""
TRIGGER_PATCH = 3
"""Backdoor trigger: a 3×3 patch in the bottom-right corner of every image channel; for flat
feature vectors the last 3·3 = 9 features; for token sequences the last 3 tokens."""
MINMAX_GAMMA_INIT = 10.0
"""Min-max: first γ tried (FLPoison's ``gamma_init``); doubled until infeasible, then bisected."""
MINMAX_REL_TOL = 1e-9
"""Min-max: bisection stops when the bracket [feasible, infeasible] is this narrow (relative)."""

# ConfigRecord keys a data-attack wrapper adds to the train instruction.
KEY_DATA = "attack-data"
KEY_TARGET = "attack-target-label"
KEY_TRIGGER = "attack-trigger-value"
KEY_NOISE = "attack-noise"
KEY_STD = "attack-std"

# Stream tags that keep attack randomness independent of training randomness for equal seeds.
_NODES_STREAM = 0xB7A0
_UPDATE_STREAM = 0xB7A1
_DATA_STREAM = 0xB7A2
_STATE_KEY = "fl.attack"  # per-node call counter in context.state


# ---------------------------------------------------------------------------- configuration
def _invalid(name: str, value: object, allowed: str) -> ConfigError:
    """The project's config error format, naming the dotted field and the value."""
    return ConfigError(f"attack.{name} = {value!r} is invalid: must be {allowed}")


def _is_real(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class AttackConfig:
    """Which attack the malicious nodes run, how many there are, and its parameters.

    ``std`` serves three attacks: ``gaussian`` (δ' ~ N(0, std²)), ``additive`` (δ' = δ +
    N(0, std²)) and ``feature_noise`` with ``noise="additive"`` (x' = clip(x + N(0, std²))
    on inputs in [0, 1]; the default 10 gives BGMD's severity-5 variance 100).
    """

    kind: str = "none"
    fraction: float = 0.0  # fraction of nodes that are malicious (fixed for the run)
    scale: float = 5.0  # sign_flip: δ' = −scale·δ (BGMD's bit flip uses 5)
    std: float = 10.0  # gaussian / additive / additive feature noise
    target_label: int = 0  # backdoor
    trigger_value: float = 1.0  # backdoor trigger value (see TRIGGER_PATCH)
    noise: str = "additive"  # feature_noise: "additive" | "impulse"
    alie_z: float | None = None  # ALIE: None -> z from Baruch et al.'s formula given n, f
    ipm_epsilon: float = 0.5  # IPM: δ' = −ε·mean(honest updates)
    minmax_direction: str = "std"  # min-max perturbation: "std" | "unit" | "sign"

    def __post_init__(self) -> None:
        self._check(self.kind in ATTACKS, "kind", self.kind, f"one of {', '.join(ATTACKS)}")
        self._check(
            _is_real(self.fraction) and 0 <= self.fraction < 1,
            "fraction",
            self.fraction,
            "a number in [0, 1)",
        )
        self._check(_is_real(self.scale) and self.scale > 0, "scale", self.scale, "> 0")
        self._check(_is_real(self.std) and self.std >= 0, "std", self.std, "≥ 0")
        self._check(
            isinstance(self.target_label, int)
            and not isinstance(self.target_label, bool)
            and self.target_label >= 0,
            "target_label",
            self.target_label,
            "an integer ≥ 0",
        )
        self._check(_is_real(self.trigger_value), "trigger_value", self.trigger_value, "finite")
        self._check(self.noise in NOISE_KINDS, "noise", self.noise, f"one of {NOISE_KINDS}")
        self._check(
            self.alie_z is None or _is_real(self.alie_z), "alie_z", self.alie_z, "finite or None"
        )
        self._check(
            _is_real(self.ipm_epsilon) and self.ipm_epsilon > 0,
            "ipm_epsilon",
            self.ipm_epsilon,
            "> 0",
        )
        self._check(
            self.minmax_direction in MINMAX_DIRECTIONS,
            "minmax_direction",
            self.minmax_direction,
            f"one of {MINMAX_DIRECTIONS}",
        )

    @staticmethod
    def _check(ok: bool, name: str, value: object, allowed: str) -> None:
        if not ok:
            raise _invalid(name, value, allowed)


def is_omniscient(cfg: AttackConfig) -> bool:
    """Whether the attack needs the round's honest updates (ALIE, IPM, min-max)."""
    return cfg.kind in OMNISCIENT_ATTACKS


def is_data_attack(cfg: AttackConfig) -> bool:
    """Whether the attack poisons the node's training data rather than its reply."""
    return cfg.kind in DATA_ATTACKS


def _round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (1e-9 absorbs float error such as 0.35·10)."""
    return math.floor(x + 0.5 + 1e-9)


def malicious_nodes(cfg: AttackConfig, num_nodes: int, seed: int) -> frozenset[int]:
    """The partition indices of the malicious nodes: exactly round(fraction·num_nodes) of them
    (halves round up), drawn by a permutation seeded by `seed` alone.

    The set is fixed for the run, and for one seed the sets are nested across fractions (the
    first k of the same permutation), so runs at 10 % and 20 % attackers share their first
    attackers. Kind "none" has no malicious nodes.
    """
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ConfigError(f"num_nodes = {num_nodes!r} is invalid: must be an integer ≥ 1")
    if cfg.kind == "none":
        return frozenset()
    k = min(num_nodes, _round_half_up(cfg.fraction * num_nodes))
    rng = np.random.default_rng(derive_seed(seed, _NODES_STREAM))
    return frozenset(int(i) for i in rng.permutation(num_nodes)[:k])


# ------------------------------------------------------------------ update-attack formulas
def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))


def sign_flip(delta: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled sign flip, δ' = −scale·δ: BGMD's "bit flip" attack with scale 5
    (Acharya et al. 2022, `grad_attack_models.py`); scale 1 is FLPoison's sign flipping."""
    return -scale * delta


def gaussian_update(delta: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Random update, δ' ~ N(0, std²) independently per coordinate, ignoring δ: the Gaussian
    Byzantine worker of Blanchard et al. 2017 (Krum paper, §5)."""
    return std * torch.randn(delta.shape, generator=gen, dtype=delta.dtype)


def additive_noise(delta: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Additive noise, δ' = δ + N(0, std²): BGMD's additive gradient attack (std 10 on
    MNIST/FMNIST, "g̃ = g + z, z ~ N(0, 100)")."""
    return delta + std * torch.randn(delta.shape, generator=gen, dtype=delta.dtype)


def alie_z(n: int, f: int) -> float:
    """Baruch et al. 2019 ("A Little Is Enough"), §4: s = ⌊n/2 + 1⌋ − f workers must be won
    over, and z = Φ⁻¹((n − s)/n) is the largest shift that stays within the crowd.

    s is clamped to [1, n − 1] so that z is finite; n = 1 gives z = 0. E.g. n = 10, f = 2:
    s = 4, z = Φ⁻¹(0.6) ≈ 0.2533.
    """
    if n < 1 or not 0 <= f <= n:
        raise ValueError(f"alie_z needs n ≥ 1 and 0 ≤ f ≤ n, got n={n}, f={f}")
    if n == 1:
        return 0.0
    s = min(max(math.floor(n / 2 + 1) - f, 1), n - 1)
    return NormalDist().inv_cdf((n - s) / n)


def alie(honest: torch.Tensor, z: float) -> torch.Tensor:
    """ALIE (Baruch et al. 2019): δ' = μ − z·σ per coordinate, with μ and σ the mean and the
    population standard deviation (ddof 0, as FLPoison) of the honest updates (rows)."""
    mu = honest.mean(dim=0)
    sigma = honest.std(dim=0, correction=0)
    return mu - z * sigma


def ipm(honest: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Inner-product manipulation (Xie et al. 2020, "Fall of Empires"): δ' = −ε·μ, which makes
    the inner product of the aggregate with the true mean negative when enough attackers send
    it (small ε defeats Krum, large ε median-like rules)."""
    return -epsilon * honest.mean(dim=0)


def minmax_direction(honest: torch.Tensor, direction: str) -> torch.Tensor:
    """Min-max perturbation p: −σ ("std"), −μ/‖μ‖ ("unit"; 0 if μ = 0) or −sign(μ) ("sign")."""
    mu = honest.mean(dim=0)
    if direction == "std":
        return -honest.std(dim=0, correction=0)
    if direction == "unit":
        norm = torch.linalg.vector_norm(mu)
        return -mu / norm if norm > 0 else torch.zeros_like(mu)
    if direction == "sign":
        return -torch.sign(mu)
    raise ValueError(f"minmax direction {direction!r}: must be one of {MINMAX_DIRECTIONS}")


def max_pairwise_distance(honest: torch.Tensor) -> float:
    """max_{i,j} ‖δ_i − δ_j‖ over the rows (exact differences, no Gram-matrix shortcut)."""
    best = 0.0
    for i in range(honest.shape[0] - 1):
        d = torch.linalg.vector_norm(honest[i + 1 :] - honest[i], dim=1).max()
        best = max(best, float(d))
    return best


def minmax_gamma(honest: torch.Tensor, p: torch.Tensor) -> float:
    """The largest γ ≥ 0 with max_i ‖μ + γp − δ_i‖ ≤ max_{i,j} ‖δ_i − δ_j‖, by bisection.

    ‖μ + γp − δ_i‖² = a_i + 2γ·b_i + γ²·c with a_i = ‖μ − δ_i‖², b_i = p·(μ − δ_i), c = ‖p‖²:
    convex in γ and feasible at γ = 0, so the feasible γ form an interval [0, γ*]. γ doubles
    from MINMAX_GAMMA_INIT until infeasible, then the bracket is halved to MINMAX_REL_TOL;
    the returned γ is always feasible.
    """
    mu = honest.mean(dim=0)
    diff = mu.unsqueeze(0) - honest
    a = (diff * diff).sum(dim=1)
    b = diff @ p
    c = float(p @ p)
    bound2 = max_pairwise_distance(honest) ** 2
    if c == 0.0 or bound2 == 0.0:
        return 0.0

    def feasible(gamma: float) -> bool:
        return float((a + 2 * gamma * b + gamma * gamma * c).max()) <= bound2

    lo, hi = 0.0, MINMAX_GAMMA_INIT
    while feasible(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > MINMAX_REL_TOL * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
    return lo


def minmax(honest: torch.Tensor, direction: str) -> torch.Tensor:
    """Min-max (Shejwalkar & Houmansadr, NDSS 2021): δ' = μ + γ·p with p from
    `minmax_direction` and γ from `minmax_gamma`: the malicious update is no farther from any
    honest update than the two farthest honest updates are from each other."""
    p = minmax_direction(honest, direction)
    return honest.mean(dim=0) + minmax_gamma(honest, p) * p


# ---------------------------------------------------------------------- data corruption
def _data_generator(seed: int) -> torch.Generator:
    seed = int(seed)
    return _generator(derive_seed(seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, _DATA_STREAM))


def _feature_noise(
    x: torch.Tensor,
    cfg: AttackConfig,
    gen: torch.Generator,
    value_range: tuple[float, float],
    vocab_size: int,
) -> torch.Tensor:
    """Additive N(0, std²) noise clipped to the value range, or salt and pepper on
    IMPULSE_AMOUNT of the values; token inputs get IMPULSE_AMOUNT of their tokens replaced
    by uniformly random tokens (either noise kind: tokens have no additive analogue)."""
    if not torch.is_floating_point(x):
        replace = torch.rand(x.shape, generator=gen) < IMPULSE_AMOUNT
        tokens = torch.randint(0, vocab_size, x.shape, generator=gen, dtype=x.dtype)
        return torch.where(replace, tokens, x)
    lo, hi = value_range
    if cfg.noise == "additive":
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64) * cfg.std * (hi - lo)
        return (x.double() + noise).clamp(lo, hi).to(x.dtype)
    flipped = torch.rand(x.shape, generator=gen) < IMPULSE_AMOUNT
    salted = torch.rand(x.shape, generator=gen) < 0.5
    out = x.clone()
    out[flipped & salted] = hi
    out[flipped & ~salted] = lo
    return out


def _stamp_trigger(x: torch.Tensor, value: float, vocab_size: int) -> torch.Tensor:
    """Stamp the backdoor trigger (TRIGGER_PATCH) on every example of x (N, ...)."""
    if x.dim() < 2:
        raise ValueError(f"backdoor: x must be (examples, ...), got shape {tuple(x.shape)}")
    out = x.clone()
    if not torch.is_floating_point(x):
        token = round(value)
        if not 0 <= token < vocab_size:
            raise ValueError(f"backdoor: trigger token {token} outside [0, {vocab_size})")
        out[:, -TRIGGER_PATCH:] = token
    elif x.dim() == 2:
        out[:, -TRIGGER_PATCH * TRIGGER_PATCH :] = value
    else:
        out[..., -TRIGGER_PATCH:, -TRIGGER_PATCH:] = value
    return out


def corrupt_data(
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    num_classes: int,
    seed: int,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A malicious node's poisoned copy of its training data (inputs are not modified).

    - ``label_flip``: y → num_classes − 1 − y (blades' label flipping). For next-token tasks
      (Shakespeare) the labels are tokens and num_classes the vocabulary: the same formula.
    - ``feature_noise``: BGMD's image corruption, assuming inputs in ``value_range`` (default
      [0, 1], as the project's image datasets are): ``additive`` adds N(0, std²·width²) and
      clips to the range (std 10: BGMD's variance 100); ``impulse`` sets IMPULSE_AMOUNT of
      the values to the range's ends, half each (salt and pepper). Token inputs (integer
      dtype) instead get IMPULSE_AMOUNT of their tokens replaced by uniform random ids in
      [0, vocab_size) (default num_classes). Labels unchanged.
    - ``backdoor``: every example gets the trigger (TRIGGER_PATCH: a 3×3 bottom-right patch
      of value ``trigger_value`` on images, the last 9 features of flat inputs, the last 3
      tokens = round(trigger_value) of token inputs) and the label ``target_label``.

    Deterministic in `seed`; its random stream is separate from training's for the same seed.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes = {num_classes} is invalid: must be ≥ 1")
    vocab = num_classes if vocab_size is None else vocab_size
    if cfg.kind == "label_flip":
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(f"label_flip: labels must lie in [0, {num_classes})")
        return x, (num_classes - 1) - y
    if cfg.kind == "feature_noise":
        return _feature_noise(x, cfg, _data_generator(seed), value_range, vocab), y
    if cfg.kind == "backdoor":
        if cfg.target_label >= num_classes:
            raise _invalid("target_label", cfg.target_label, f"< num_classes ({num_classes})")
        return _stamp_trigger(x, cfg.trigger_value, vocab), torch.full_like(y, cfg.target_label)
    raise ValueError(f"corrupt_data: {cfg.kind!r} is not a data attack ({DATA_ATTACKS})")


def data_attack_config(cfg: AttackConfig) -> dict[str, Any]:
    """The ConfigRecord entries that ask a node to poison its training data with `cfg`."""
    return {
        KEY_DATA: cfg.kind,
        KEY_TARGET: cfg.target_label,
        KEY_TRIGGER: float(cfg.trigger_value),
        KEY_NOISE: cfg.noise,
        KEY_STD: float(cfg.std),
    }


def data_attack_from_config(config: Mapping[str, Any]) -> AttackConfig | None:
    """Parse the ``attack-*`` keys of a train instruction's config back into an AttackConfig
    (None when the node is not asked to poison its data). Missing parameters take defaults."""
    if KEY_DATA not in config:
        return None
    d = AttackConfig()
    cfg = AttackConfig(
        kind=str(config[KEY_DATA]),
        target_label=int(config.get(KEY_TARGET, d.target_label)),
        trigger_value=float(config.get(KEY_TRIGGER, d.trigger_value)),
        noise=str(config.get(KEY_NOISE, d.noise)),
        std=float(config.get(KEY_STD, d.std)),
    )
    if not is_data_attack(cfg):
        raise _invalid("kind", cfg.kind, f"a data attack ({', '.join(DATA_ATTACKS)})")
    return cfg


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


def _server_round(message: Message) -> int:
    """The instruction's "server-round" (−1 if the strategy sent none)."""
    for rec in message.content.config_records.values():
        if "server-round" in rec:
            return int(rec["server-round"])  # type: ignore[arg-type]
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
    - Evaluate/query messages, and error replies, pass through unchanged.

    Noise is seeded by (seed, node_index, server round, this node's train-call count), the
    count being kept in ``context.state["fl.attack"]``.
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
        """Run the honest app on (possibly poisoned) instructions and corrupt its reply."""
        if self.cfg.kind == "none" or not _is_train(message):
            return self.app(message, context)
        if is_data_attack(self.cfg):
            return self.app(_with_config(message, data_attack_config(self.cfg)), context)
        observed, f = self._honest, self._num_byzantine
        self._honest, self._num_byzantine = [], None
        reply = self.app(message, context)
        if reply.has_error() or not reply.has_content():
            return reply
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
            return gaussian_update(own, cfg.std, _generator(seed))
        if cfg.kind == "additive":
            return additive_noise(own, cfg.std, _generator(seed))
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
