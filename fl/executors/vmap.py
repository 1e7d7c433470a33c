"""Local training of many clients at once: one vectorised SGD step for all of them.

Every client of a round trains its own copy of the same architecture, so its mini-batch SGD
can run as one `torch.func.vmap` over stacked parameters (`functional_call` + `grad`): a step
of C clients costs a few batched kernels instead of C small ones plus C × Python overhead.

It reproduces `fl.client.training.train_local` task by task, to float tolerance (summation order
differs): the same seeded batch schedule (`batch_schedule` with the task's own generator), the
same loss (mean cross-entropy of the batch, plus FedProx's term), and torch's SGD update
(weight decay, then momentum with the buffer initialised to the first step's direction).
Clients with fewer steps or smaller batches are masked: a padded example adds nothing to its
client's loss, and a client past its last step keeps its parameters and momentum.

Only models whose training is a pure function of parameters and data can be batched (no
dropout, batch norm or recurrent layers): `batchable` says which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fl.client.training import LocalTraining, TrainStats, batch_schedule

_PURE_MODULES = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Sequential,
)

MAX_GATHER_BYTES = 64 * 2**20
"""Largest per-step input batch (all clients of a chunk) gathered at once; more clients are
trained in successive chunks, which keeps memory flat for any number of clients."""


def batchable(model: nn.Module) -> bool:
    """True if `model`'s training step is a pure function of its parameters and inputs:
    built only from stateless layers (a dropout of p = 0 counts), so vmapped training equals
    the sequential one."""
    for module in model.modules():
        if module is model and not isinstance(module, _PURE_MODULES):
            continue  # the model class itself: its children decide
        if isinstance(module, nn.Dropout) and module.p == 0:
            continue
        if not isinstance(module, _PURE_MODULES):
            return False
    return not any(True for _ in model.buffers())


@dataclass(frozen=True)
class BatchTask:
    """One client's local training task: its data, start parameters and hyper-parameters."""

    x: torch.Tensor
    y: torch.Tensor
    start: dict[str, torch.Tensor]  # parameter name -> initial value (the model it was sent)
    hp: LocalTraining
    seed: int
    num_classes: int = 0  # > 0: count the labels of the processed examples


def train_batched(
    model: nn.Module, tasks: Sequence[BatchTask]
) -> list[tuple[dict[str, torch.Tensor], TrainStats]]:
    """Train every task from its start parameters; per task, the final parameters (same names
    as `model.named_parameters()`) and the statistics `train_local` would report.

    `model` only supplies the architecture: its own parameters are not changed. Like
    `train_local`, it leaves torch's default generator seeded with the last task's seed.
    """
    if not batchable(model):
        raise ValueError(f"{type(model).__name__} cannot be trained batched (see `batchable`)")
    if not tasks:
        return []
    # The exact schedules train_local would draw, from each task's own generator.
    schedules = [
        batch_schedule(len(t.y), t.hp, torch.Generator().manual_seed(t.seed)) for t in tasks
    ]
    # Longest first: at every step the clients still training are a prefix of the batch, so
    # a step works on slices (views) of the stacked parameters and idle clients cost nothing.
    order = sorted(range(len(tasks)), key=lambda i: -len(schedules[i]))
    out: list[tuple[dict[str, torch.Tensor], TrainStats] | None] = [None] * len(tasks)
    for chunk in _chunks(order, tasks):
        done = _train_chunk(model, [tasks[i] for i in chunk], [schedules[i] for i in chunk])
        for i, result in zip(chunk, done, strict=True):
            out[i] = result
    torch.default_generator.manual_seed(tasks[-1].seed)
    return [r for r in out if r is not None]


def _chunks(order: list[int], tasks: Sequence[BatchTask]) -> list[list[int]]:
    """Split tasks (in `order`) so each step's gathered inputs stay under MAX_GATHER_BYTES."""
    per_task = max(
        t.x[:1].element_size() * t.x[:1].numel() * max(t.hp.batch_size, 1) for t in tasks
    )
    size = max(1, MAX_GATHER_BYTES // max(per_task, 1))
    return [order[i : i + size] for i in range(0, len(order), size)]


def _train_chunk(
    model: nn.Module, tasks: Sequence[BatchTask], schedules: Sequence[list[torch.Tensor]]
) -> list[tuple[dict[str, torch.Tensor], TrainStats]]:
    """Train tasks whose schedules are sorted longest first."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    c = len(tasks)
    num_steps = len(schedules[0])
    width = max((len(b) for s in schedules for b in s), default=1)
    # All clients' examples in one tensor; per step, one gather of [C, width] global indices.
    offsets, total = [], 0
    for t in tasks:
        offsets.append(total)
        total += len(t.y)
    x_all = torch.cat([t.x for t in tasks]) if total else tasks[0].x
    y_all = torch.cat([t.y for t in tasks]) if total else tasks[0].y
    index_np = np.zeros((num_steps, c, width), dtype=np.int64)
    mask_np = np.zeros((num_steps, c, width), dtype=np.float32)
    for i, (sched, off) in enumerate(zip(schedules, offsets, strict=True)):
        for s, idx in enumerate(sched):
            # padding repeats the client's own first example of the step (masked out): never
            # another client's data, which could be non-finite under these parameters
            index_np[s, i, :] = int(idx[0]) + off
            index_np[s, i, : len(idx)] = idx.numpy() + off
            mask_np[s, i, : len(idx)] = 1.0
    index, mask = torch.from_numpy(index_np), torch.from_numpy(mask_np)
    counts = mask.sum(dim=2)  # [steps, C] examples per step
    training = [sum(1 for sch in schedules if len(sch) > s) for s in range(num_steps)]

    like = dict(model.named_parameters())
    for t in tasks:  # as strict load_state_dict: the same names and shapes, or an error
        if set(t.start) != set(like) or any(
            tuple(t.start[n].shape) != tuple(p.shape) for n, p in like.items()
        ):
            raise ValueError("a task's start model does not match the model's parameters")
    params = {n: torch.stack([t.start[n].detach().to(like[n].dtype) for t in tasks]) for n in names}
    anchor = {n: p.clone() for n, p in params.items()}
    lr = torch.tensor([t.hp.lr for t in tasks])
    mom = torch.tensor([t.hp.momentum for t in tasks])
    wd = torch.tensor([t.hp.weight_decay for t in tasks])
    mu = torch.tensor([t.hp.proximal_mu for t in tasks])
    use_prox = bool((mu > 0).any())
    use_mom = bool((mom != 0).any())
    use_wd = bool((wd != 0).any())
    bufs: dict[str, torch.Tensor] = {}

    def loss_fn(
        p: dict[str, torch.Tensor],
        a: dict[str, torch.Tensor],
        m_u: torch.Tensor,
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = functional_call(model, {**p, **frozen}, (xb,))
        ce = F.cross_entropy(logits, yb, reduction="none")
        data_loss = (ce * mb).sum() / mb.sum().clamp(min=1.0)
        loss = data_loss
        if use_prox:
            prox = sum(((p[n] - a[n]) ** 2).sum() for n in names)
            loss = loss + 0.5 * m_u * prox
        return loss, data_loss

    step_fn = vmap(grad_and_value(loss_fn, has_aux=True))
    loss_sum = torch.zeros(c, dtype=torch.float64)
    model_mode = model.training
    model.train()
    try:
        for s in range(num_steps):
            k = training[s]  # clients 0..k-1 take this step
            flat = index[s, :k].reshape(-1)
            xb = x_all[flat].reshape(k, width, *x_all.shape[1:])
            yb = y_all[flat].reshape(k, width, *y_all.shape[1:])
            live = {n: params[n][:k] for n in names}
            grads, (_, data_loss) = step_fn(
                live, {n: anchor[n][:k] for n in names}, mu[:k], xb, yb, mask[s, :k]
            )
            loss_sum[:k] += data_loss.detach().double() * counts[s, :k].double()
            for n in names:
                p, g = live[n], grads[n]
                shape = (k,) + (1,) * (p.dim() - 1)
                d = g + wd[:k].reshape(shape) * p if use_wd else g
                if use_mom:
                    if n not in bufs:  # torch's SGD: the first step's direction
                        bufs[n] = torch.zeros_like(params[n])
                        bufs[n][:k] = d
                    else:
                        bufs[n][:k] = mom[:k].reshape(shape) * bufs[n][:k] + d
                    d = torch.where((mom[:k] != 0).reshape(shape), bufs[n][:k], d)
                p.sub_(lr[:k].reshape(shape) * d)  # in place: updates params[n][:k]
    finally:
        model.train(model_mode)

    results = []
    for i, (t, sched) in enumerate(zip(tasks, schedules, strict=True)):
        examples = int(counts[:, i].sum())
        labels: list[int] = []
        if t.num_classes > 0:
            seen = torch.cat(sched) if sched else torch.zeros(0, dtype=torch.long)
            labels = [
                int(v)
                for v in torch.bincount(t.y[seen].reshape(-1), minlength=t.num_classes)[
                    : t.num_classes
                ]
            ]
        stats = TrainStats(
            loss=float(loss_sum[i]) / examples if examples else math.nan,
            examples=examples,
            steps=len(sched),
            label_counts=labels,
        )
        final = {n: params[n][i].clone() if n in params else t.start[n].clone() for n in like}
        results.append((final, stats))
    return results
