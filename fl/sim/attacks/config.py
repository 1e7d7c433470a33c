"""The `[attack]` section: which attack, which lies, how many malicious nodes, which ones."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fl.client.poisoning import DATA_ATTACKS, NOISE_KINDS
from fl.client.training import derive_seed
from fl.schema import ConfigError

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
MINMAX_DIRECTIONS: tuple[str, ...] = ("std", "unit", "sign")
LIES: tuple[str, ...] = ("inflate_examples", "forge_labels", "fast_lane", "stale_replay")
"""What a malicious node may lie about (``attack.lies``), on top of any ``kind``."""
REPLY_LIES: tuple[str, ...] = ("inflate_examples", "forge_labels", "stale_replay")
"""The lies the Byzantine wrapper tells in its train replies (``fast_lane`` is in the devices)."""

MINMAX_GAMMA_INIT = 10.0
"""Min-max: first γ tried (FLPoison's ``gamma_init``); doubled until infeasible, then bisected."""
MINMAX_REL_TOL = 1e-9
"""Min-max: bisection stops when the bracket [feasible, infeasible] is this narrow (relative)."""


# Stream tags that keep attack randomness independent of training randomness for equal seeds.
_NODES_STREAM = 0xB7A0
_UPDATE_STREAM = 0xB7A1
_STATE_KEY = "fl.attack"  # per-node call counter in context.state
_REPLAY_KEY = "fl.attack.replay"  # stale_replay: the node's first update δ₀, in context.state


# ---------------------------------------------------------------------------- configuration
def _invalid(name: str, value: object, allowed: str) -> ConfigError:
    """The project's config error format, naming the dotted field and the value."""
    return ConfigError(f"attack.{name}", value, allowed)


def _is_real(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class AttackConfig:
    """Which attack the malicious nodes run, what they lie about, how many there are.

    Parameters
    ----------
    kind
        The update, omniscient or data attack (one of `ATTACKS`; ``"none"``: the model is
        honest, which still leaves the ``lies``).
    fraction
        Fraction of the nodes that are malicious, in [0, 1) (fixed for the run; see
        `malicious_nodes`). There are malicious nodes only if ``kind != "none"`` or ``lies``.
    scale
        ``sign_flip``: δ' = −scale·δ (BGMD's bit flip uses 5).
    std
        ``gaussian`` (δ' ~ N(0, std²)), ``additive`` (δ' = δ + N(0, std²)) and
        ``feature_noise`` with ``noise="additive"`` (x' = clip(x + N(0, std²)) on inputs in
        [0, 1]; the default 10 gives BGMD's severity-5 variance 100).
    target_label
        ``backdoor``: the label triggered inputs are relabelled to.
    trigger_value
        ``backdoor``: the trigger patch's value (see ``TRIGGER_PATCH``).
    noise
        ``feature_noise``: ``"additive"`` or ``"impulse"`` (salt and pepper).
    alie_z
        ALIE's z; None: Baruch et al.'s formula for the round's n and f.
    ipm_epsilon
        IPM: δ' = −ε·mean(honest updates).
    minmax_direction
        Min-max perturbation direction: ``"std"``, ``"unit"`` or ``"sign"``.
    lies
        What the malicious nodes lie about, any distinct subset of `LIES` (a TOML list),
        applied after ``kind``'s attack so that both compose: ``inflate_examples`` (the reply's
        ``num-examples``, ``examples-processed`` and ``label-counts`` × ``inflate_factor``),
        ``forge_labels`` (``label-counts`` one-hot on the node's rarest class),
        ``stale_replay`` (every train reply after the first carries the first update δ₀
        again, on the current model: g + δ₀) and ``fast_lane`` (the malicious nodes get the
        population's fastest devices; virtual grid only, see `fl.sim.attacks.fast_lane`).
    inflate_factor
        ``inflate_examples``: the factor (finite, ≥ 1).
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
    lies: tuple[str, ...] = ()  # any distinct subset of LIES
    inflate_factor: float = 1000.0  # inflate_examples: num-examples × inflate_factor

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
        lies = self.lies
        self._check(
            isinstance(lies, list | tuple)
            and all(isinstance(x, str) and x in LIES for x in lies)
            and len(set(lies)) == len(lies),
            "lies",
            lies,
            f"a list of distinct names from {', '.join(LIES)}",
        )
        object.__setattr__(self, "lies", tuple(lies))  # TOML gives a list
        self._check(
            _is_real(self.inflate_factor) and self.inflate_factor >= 1,
            "inflate_factor",
            self.inflate_factor,
            "a finite number ≥ 1",
        )

    @staticmethod
    def _check(ok: bool, name: str, value: object, allowed: str) -> None:
        if not ok:
            raise _invalid(name, value, allowed)


def is_active(cfg: AttackConfig) -> bool:
    """Whether the config makes nodes malicious at all (an attack kind or a lie), fraction aside."""
    return cfg.kind != "none" or bool(cfg.lies)


def lies_in_replies(cfg: AttackConfig) -> bool:
    """Whether the malicious nodes' replies differ from honest ones (a kind or a reply lie), so
    that they need the Byzantine wrapper (``fast_lane`` alone changes only their devices)."""
    return cfg.kind != "none" or any(lie in REPLY_LIES for lie in cfg.lies)


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
    attackers. A config with kind "none" and no lies has no malicious nodes (`is_active`).
    """
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ConfigError("num_nodes", num_nodes, "an integer ≥ 1")
    if not is_active(cfg):
        return frozenset()
    k = min(num_nodes, _round_half_up(cfg.fraction * num_nodes))
    rng = np.random.default_rng(derive_seed(seed, _NODES_STREAM))
    return frozenset(int(i) for i in rng.permutation(num_nodes)[:k])
