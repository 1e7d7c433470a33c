"""Data poisoning a node applies to its own training data when its instruction asks for it.

A Byzantine wrapper (`fl.sim.attacks`) adds `attack-*` keys to a malicious node's train
instruction; the project's ClientApp reads them with `data_attack_from_config` and trains on
`corrupt_data`'s poisoned copy. Living with the ClientApp, this needs nothing of the simulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from fl.client.training import derive_seed, seeded_generator

DATA_ATTACKS: tuple[str, ...] = ("label_flip", "feature_noise", "backdoor")
NOISE_KINDS: tuple[str, ...] = ("additive", "impulse")

IMPULSE_AMOUNT = 0.95
"""Salt-and-pepper: fraction of input values replaced (BGMD's severity 5; half 1s, half 0s)."""
TRIGGER_PATCH = 3
"""Backdoor trigger: a 3×3 patch in the bottom-right corner of every image channel; for flat
feature vectors the last 3·3 = 9 features; for token sequences the last 3 tokens."""

# ConfigRecord keys a data-attack wrapper adds to the train instruction.
KEY_DATA = "attack-data"
KEY_TARGET = "attack-target-label"
KEY_TRIGGER = "attack-trigger-value"
KEY_NOISE = "attack-noise"
KEY_STD = "attack-std"

_DATA_STREAM = 0xB7A2


class PoisonSpec(Protocol):
    """The data-attack fields a poisoning reads (a `DataPoisoning`, or an attack config)."""

    @property
    def kind(self) -> str: ...
    @property
    def target_label(self) -> int: ...
    @property
    def trigger_value(self) -> float: ...
    @property
    def noise(self) -> str: ...
    @property
    def std(self) -> float: ...


@dataclass(frozen=True)
class DataPoisoning:
    """What a node is asked to do to its data: the data-attack fields of an attack config."""

    kind: str
    target_label: int = 0
    trigger_value: float = 1.0
    noise: str = "additive"
    std: float = 10.0


# ---------------------------------------------------------------------- data corruption
def _data_generator(seed: int) -> torch.Generator:
    seed = int(seed)
    return seeded_generator(derive_seed(seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, _DATA_STREAM))


def _feature_noise(
    x: torch.Tensor,
    cfg: PoisonSpec,
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
    cfg: PoisonSpec,
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
            raise ValueError(
                f"attack.target_label = {cfg.target_label!r} is invalid: "
                f"must be < num_classes ({num_classes})"
            )
        return _stamp_trigger(x, cfg.trigger_value, vocab), torch.full_like(y, cfg.target_label)
    raise ValueError(f"corrupt_data: {cfg.kind!r} is not a data attack ({DATA_ATTACKS})")


def data_attack_config(cfg: PoisonSpec) -> dict[str, Any]:
    """The ConfigRecord entries that ask a node to poison its training data with `cfg`."""
    return {
        KEY_DATA: cfg.kind,
        KEY_TARGET: cfg.target_label,
        KEY_TRIGGER: float(cfg.trigger_value),
        KEY_NOISE: cfg.noise,
        KEY_STD: float(cfg.std),
    }


def data_attack_from_config(config: Mapping[str, Any]) -> DataPoisoning | None:
    """Parse the ``attack-*`` keys of a train instruction's config back into a DataPoisoning
    (None when the node is not asked to poison its data). Missing parameters take defaults."""
    if KEY_DATA not in config:
        return None
    d = DataPoisoning(kind="")
    cfg = DataPoisoning(
        kind=str(config[KEY_DATA]),
        target_label=int(config.get(KEY_TARGET, d.target_label)),
        trigger_value=float(config.get(KEY_TRIGGER, d.trigger_value)),
        noise=str(config.get(KEY_NOISE, d.noise)),
        std=float(config.get(KEY_STD, d.std)),
    )
    if cfg.kind not in DATA_ATTACKS:
        raise ValueError(
            f"attack.kind = {cfg.kind!r} is invalid: "
            f"must be a data attack ({', '.join(DATA_ATTACKS)})"
        )
    return cfg
