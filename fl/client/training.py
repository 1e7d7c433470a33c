"""Local training and evaluation of a torch model: the arithmetic a client does.

Kept free of Flower so the client, the server's central evaluation and the benchmarks'
bare-loop baseline share exactly the same loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LocalTraining:
    """Hyper-parameters of one local training task."""

    epochs: int = 1
    steps: int = 0  # > 0: exactly this many mini-batch steps instead of epochs
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0  # FedProx: adds mu/2 * ||w - w_global||^2


@dataclass(frozen=True)
class TrainStats:
    """What a local training task did."""

    loss: float  # mean training loss over processed examples
    examples: int  # examples passed through forward + backward
    steps: int
    label_counts: list[int] = field(default_factory=list)  # labels of the processed examples


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integer parts (seed, node, round, ...), independent of call order."""
    words: list[int] = []
    for p in map(int, parts):
        words.append(p & 0xFFFFFFFF)  # (negative parts wrap, as before)
        while p >= 1 << 32:  # high bits count too: seeds s and s + 2**32 differ
            p >>= 32
            words.append(p & 0xFFFFFFFF)
    state = np.random.SeedSequence(words).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def seeded_generator(seed: int) -> torch.Generator:
    """A torch CPU generator seeded with the low 63 bits of `seed`."""
    return torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))


def batch_schedule(n: int, hp: LocalTraining, gen: torch.Generator) -> list[torch.Tensor]:
    """Index batches for one task: shuffled epochs, or `steps` batches cycling through
    fresh permutations."""
    if n <= 0:
        return []
    bs = min(hp.batch_size, n)
    batches: list[torch.Tensor] = []
    if hp.steps > 0:
        while len(batches) < hp.steps:
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, bs):
                if len(batches) == hp.steps:
                    break
                batches.append(perm[start : start + bs])
        return batches
    for _ in range(hp.epochs):
        perm = torch.randperm(n, generator=gen)
        batches.extend(perm[start : start + bs] for start in range(0, n, bs))
    return batches


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    hp: LocalTraining,
    seed: int,
    num_classes: int = 0,
) -> TrainStats:
    """Train `model` in place with mini-batch SGD on (x, y); deterministic in `seed`.

    With `num_classes` > 0 the stats count the labels of the examples processed (FLeet's
    label vector)."""
    gen = torch.Generator().manual_seed(seed)
    # Dropout and other in-model randomness. The CPU generator only: torch.manual_seed also
    # seeds CUDA lazily, recording a stack trace each call (0.8 ms, 16% of a small task).
    torch.default_generator.manual_seed(seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if hp.proximal_mu > 0 else None
    opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    loss_sum, examples, steps = 0.0, 0, 0
    counts = torch.zeros(max(num_classes, 0), dtype=torch.long)
    for idx in batch_schedule(len(y), hp, gen):
        xb, yb = x[idx], y[idx]
        if num_classes > 0:
            counts += torch.bincount(yb.reshape(-1), minlength=num_classes)[:num_classes]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss_sum += float(loss.detach()) * len(idx)
        if anchor is not None:
            prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
            loss = loss + 0.5 * hp.proximal_mu * prox
        loss.backward()
        opt.step()
        examples += len(idx)
        steps += 1
    return TrainStats(
        loss=loss_sum / examples if examples else math.nan,
        examples=examples,
        steps=steps,
        label_counts=[int(c) for c in counts],
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of `model` on (x, y)."""
    model.eval()
    n = len(y)
    if n == 0:
        return math.nan, math.nan
    loss_sum, correct = 0.0, 0
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = model(xb)
        loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(dim=1) == yb).sum())
    return loss_sum / n, correct / n


@torch.no_grad()
def recall_per_class(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 2048
) -> np.ndarray:
    """Recall of each class on (x, y): the share of its examples predicted as it (nan if absent)."""
    model.eval()
    hits = np.zeros(num_classes)
    totals = np.bincount(y.reshape(-1).numpy(), minlength=num_classes)[:num_classes]
    for start in range(0, len(y), batch_size):
        yb = y[start : start + batch_size]
        pred = model(x[start : start + batch_size]).argmax(dim=1)
        hits += np.bincount(yb[pred == yb].numpy(), minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)
