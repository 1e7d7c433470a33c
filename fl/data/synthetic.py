"""FedProx's Synthetic(α, β) generator (Li et al., MLSys 2020, §5.1), seeded.

For each client k = 1..K, following the reference generator of the FedProx repository:

- model prior ``u_k ~ N(0, α)``; ``W_k`` (60x10) and ``b_k`` (10) have entries ``~ N(u_k, 1)``
  (the reference uses the same mean for ``W`` and ``b``);
- feature prior ``B_k ~ N(0, β)``; ``v_k`` (60) has entries ``~ N(B_k, 1)``;
- features ``x ~ N(v_k, Σ)`` with ``Σ = diag(j^-1.2)``, j = 1..60; label
  ``y = argmax(softmax(x W_k + b_k))``;
- size ``n_k = int(lognormal(4, 2)) + 50`` (the paper's "power law");
- each client is shuffled and split 90% train / 10% test.

α and β are standard deviations, as in ``np.random.normal``. Synthetic-IID instead draws one
global ``W, b ~ N(0, 1)`` and sets ``v_k = 0`` for every client. The reference code is unseeded;
this one draws from ``np.random.default_rng`` so the same seed gives the same data (it is not
bit-identical to the reference random stream). Sampling ``x`` as ``v_k + sqrt(diag Σ) · z`` is
the same distribution as the reference's ``multivariate_normal`` with a diagonal covariance.

**Lazy generation** (``synthetic_lazy = true``, :func:`load_lazy_synthetic_pool`): every client's
data is generated from ``(seed, client)`` when a node first touches it, so a million-client
population costs O(clients) small arrays at set-up (sizes, priors), not ~450 samples × 60
features per client up front (~21 GiB at 100 000 clients). The eager generator cannot be made
lazy with identical output: it draws every client's ``v_k``, ``W_k``, ``b_k`` and ``x`` from one
sequential stream, and numpy's normal sampler (ziggurat) consumes a variable number of raw draws
per value, so where client ``k``'s draws start in that stream is known only after generating
clients ``0..k-1``; the 90/10 shuffle is a second such stream. So the eager generator is kept,
bit-identical, as the default, and the lazy one is a separate, documented variant: it shares the
eager stream's leading vectorised draws — the sizes ``n_k``, the priors ``u_k`` and ``B_k``, and
Synthetic-IID's global ``W, b`` are identical — and draws each client's ``v_k, W_k, b_k, x`` and
its shuffle from its own stream ``[seed, _STREAM, 2, k]`` (same distribution, different values).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, overload

import numpy as np
import torch

from fl.data.partition import NodeIndices
from fl.data.pool import Pool
from fl.data.sources import TensorSource

__all__ = [
    "DIMENSION",
    "NUM_CLASSES",
    "LazySynthetic",
    "LazySyntheticSource",
    "client_sizes",
    "generate_synthetic",
    "load_lazy_synthetic_pool",
    "load_synthetic_pool",
]

DIMENSION = 60
NUM_CLASSES = 10
TRAIN_FRACTION = 0.9
_STREAM = 0x5F17  # separates this generator's random stream from the partitioning streams


def _draw_sizes(rng: np.random.Generator, num_clients: int) -> np.ndarray:
    return rng.lognormal(4, 2, num_clients).astype(np.int64) + 50


def client_sizes(num_clients: int, seed: int) -> np.ndarray:
    """The client sizes ``n_k`` that ``generate_synthetic`` uses for this seed (cheap)."""
    return _draw_sizes(np.random.default_rng([seed, _STREAM]), num_clients)


def generate_synthetic(
    num_clients: int, alpha: float, beta: float, iid: bool, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generate the clients' ``(x float64 (n_k, 60), y int64 (n_k,))`` before any split."""
    rng = np.random.default_rng([seed, _STREAM])
    sizes = _draw_sizes(rng, num_clients)  # drawn first, so client_sizes() sees the same
    mean_w = rng.normal(0, alpha, num_clients)
    mean_b = mean_w
    b_prior = rng.normal(0, beta, num_clients)
    std_x = np.power(np.arange(1, DIMENSION + 1, dtype=np.float64), -1.2) ** 0.5
    if iid:
        mean_x = np.zeros((num_clients, DIMENSION))
        w_global = rng.normal(0, 1, (DIMENSION, NUM_CLASSES))
        b_global = rng.normal(0, 1, NUM_CLASSES)
    else:
        mean_x = np.stack([rng.normal(b_prior[k], 1, DIMENSION) for k in range(num_clients)])
    clients = []
    for k in range(num_clients):
        if iid:
            w, b = w_global, b_global
        else:
            w = rng.normal(mean_w[k], 1, (DIMENSION, NUM_CLASSES))
            b = rng.normal(mean_b[k], 1, NUM_CLASSES)
        x = mean_x[k] + std_x * rng.standard_normal((int(sizes[k]), DIMENSION))
        y = np.argmax(x @ w + b, axis=1).astype(np.int64)  # softmax is monotone
        clients.append((x, y))
    return clients


@lru_cache(maxsize=8)
def _synthetic_arrays(
    num_clients: int, alpha: float, beta: float, iid: bool, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate and split: ``(x_train, y_train, x_test, y_test, train_sizes)``, float32 x."""
    rng = np.random.default_rng([seed, _STREAM, 1])
    xs_tr, ys_tr, xs_te, ys_te, sizes = [], [], [], [], []
    for x, y in generate_synthetic(num_clients, alpha, beta, iid, seed):
        order = rng.permutation(len(y))
        n_train = int(TRAIN_FRACTION * len(y))
        xs_tr.append(x[order[:n_train]])
        ys_tr.append(y[order[:n_train]])
        xs_te.append(x[order[n_train:]])
        ys_te.append(y[order[n_train:]])
        sizes.append(n_train)
    return (
        np.concatenate(xs_tr).astype(np.float32),
        np.concatenate(ys_tr),
        np.concatenate(xs_te).astype(np.float32),
        np.concatenate(ys_te),
        np.asarray(sizes, dtype=np.int64),
    )


def load_synthetic_pool(num_clients: int, alpha: float, beta: float, iid: bool, seed: int) -> Pool:
    """Synthetic(α, β) with ``num_clients`` generator clients as the natural clients.

    The training pool is the clients' 90% parts in client order; the central test set is the
    union of their 10% parts.
    """
    x_tr, y_tr, x_te, y_te, sizes = _synthetic_arrays(
        num_clients, float(alpha), float(beta), bool(iid), seed
    )
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    clients = tuple(np.arange(bounds[k], bounds[k + 1]) for k in range(num_clients))
    return Pool(
        train=TensorSource(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        test=TensorSource(torch.from_numpy(x_te), torch.from_numpy(y_te)),
        num_classes=NUM_CLASSES,
        input_shape=(DIMENSION,),
        clients=clients,
        client_names=tuple(f"f_{k:05d}" for k in range(num_clients)),
    )


# --------------------------------------------------------------------------------------------------
# Lazy generation: one client at a time, from (seed, client).
# --------------------------------------------------------------------------------------------------

_LAZY_CLIENT_STREAM = 2  # [seed, _STREAM, 2, k]: client k's own draws
_LAZY_CACHE = 256  # clients kept generated (a round touches ~100)


class LazySynthetic:
    """Synthetic(α, β) for ``num_clients`` clients, each generated when first asked for.

    At construction only the leading vectorised draws of the eager stream are made (sizes,
    priors ``u_k``, ``B_k``; IID's global model): O(clients), ~30 MB for 10⁶ clients.
    :meth:`client` returns ``(x_train, y_train, x_test, y_test)`` (x float32), its train part
    the first ``int(0.9 n_k)`` samples of a seeded shuffle, as the eager split. The most
    recently used clients are cached; a pickled copy starts with an empty cache.
    """

    def __init__(self, num_clients: int, alpha: float, beta: float, iid: bool, seed: int) -> None:
        self.num_clients, self.alpha, self.beta = int(num_clients), float(alpha), float(beta)
        self.iid, self.seed = bool(iid), int(seed)
        rng = np.random.default_rng([seed, _STREAM])  # the eager stream's leading draws
        self.sizes = _draw_sizes(rng, self.num_clients)
        self.mean_w = rng.normal(0, self.alpha, self.num_clients)
        self.b_prior = rng.normal(0, self.beta, self.num_clients)
        self.w_global: np.ndarray | None = None
        self.b_global: np.ndarray | None = None
        if self.iid:
            self.w_global = rng.normal(0, 1, (DIMENSION, NUM_CLASSES))
            self.b_global = rng.normal(0, 1, NUM_CLASSES)
        self.train_sizes = (TRAIN_FRACTION * self.sizes).astype(np.int64)
        self.test_sizes = self.sizes - self.train_sizes
        self.train_offsets = np.concatenate([[0], np.cumsum(self.train_sizes)])
        self.test_offsets = np.concatenate([[0], np.cumsum(self.test_sizes)])
        self._cache: OrderedDict[int, tuple[np.ndarray, ...]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def client(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Client ``k``'s ``(x_train, y_train, x_test, y_test)``; deterministic in (seed, k)."""
        k = int(k)
        hit = self._cache.get(k)
        if hit is not None:
            self._cache.move_to_end(k)
            return hit  # type: ignore[return-value]
        if not 0 <= k < self.num_clients:
            raise IndexError(f"client {k} out of range for {self.num_clients} clients")
        rng = np.random.default_rng([self.seed, _STREAM, _LAZY_CLIENT_STREAM, k])
        std_x = np.power(np.arange(1, DIMENSION + 1, dtype=np.float64), -1.2) ** 0.5
        if self.iid:
            assert self.w_global is not None and self.b_global is not None
            mean_x, w, b = np.zeros(DIMENSION), self.w_global, self.b_global
        else:
            mean_x = rng.normal(self.b_prior[k], 1, DIMENSION)
            w = rng.normal(self.mean_w[k], 1, (DIMENSION, NUM_CLASSES))
            b = rng.normal(self.mean_w[k], 1, NUM_CLASSES)
        n = int(self.sizes[k])
        x = mean_x + std_x * rng.standard_normal((n, DIMENSION))
        y = np.argmax(x @ w + b, axis=1).astype(np.int64)
        order = rng.permutation(n)
        n_train = int(self.train_sizes[k])
        out = (
            x[order[:n_train]].astype(np.float32),
            y[order[:n_train]],
            x[order[n_train:]].astype(np.float32),
            y[order[n_train:]],
        )
        self._cache[k] = out
        if len(self._cache) > _LAZY_CACHE:
            self._cache.popitem(last=False)
        return out


class LazySyntheticSource:
    """The train (or test) samples of a :class:`LazySynthetic`, addressed by global index.

    Client ``k``'s samples are the contiguous positions ``offsets[k] .. offsets[k + 1]``;
    ``take`` generates only the clients it touches. ``labels`` of the whole pool would generate
    every client: it is computed (and cached) only if asked for.
    """

    def __init__(self, gen: LazySynthetic, part: str) -> None:
        if part not in ("train", "test"):
            raise ValueError(f"part must be 'train' or 'test', got {part!r}")
        self.gen, self.part = gen, part
        self.offsets = gen.train_offsets if part == "train" else gen.test_offsets
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def labels(self) -> np.ndarray:
        """Every label (generates every client: avoid on large pools)."""
        if self._labels is None:
            self._labels = self.labels_at(np.arange(len(self), dtype=np.int64))
        return self._labels

    def _parts(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        x_tr, y_tr, x_te, y_te = self.gen.client(k)
        return (x_tr, y_tr) if self.part == "train" else (x_te, y_te)

    def _gather(self, idx: np.ndarray, labels_only: bool) -> tuple[np.ndarray | None, np.ndarray]:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"idx must be 1-D, got shape {idx.shape}")
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"sample index out of range for {len(self)} samples")
        owner = np.searchsorted(self.offsets, idx, side="right") - 1
        x = None if labels_only else np.empty((len(idx), DIMENSION), dtype=np.float32)
        y = np.empty(len(idx), dtype=np.int64)
        for k in np.unique(owner).tolist():
            at = np.flatnonzero(owner == k)
            xs, ys = self._parts(k)
            local = idx[at] - self.offsets[k]
            y[at] = ys[local]
            if x is not None:
                x[at] = xs[local]
        return x, y

    def labels_at(self, idx: np.ndarray) -> np.ndarray:
        """Labels of the samples at ``idx`` (generates the clients they belong to)."""
        return self._gather(idx, labels_only=True)[1]

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x float32 (n, 60), y int64 (n,))`` of the samples at ``idx``."""
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        x, y = self._gather(idx, labels_only=False)
        assert x is not None
        return torch.from_numpy(x), torch.from_numpy(y)


class _ClientNames(Sequence[str]):
    """``f"f_{k:05d}"`` for k < n, without a million strings."""

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, k: int) -> str: ...

    @overload
    def __getitem__(self, k: slice) -> list[str]: ...

    def __getitem__(self, k: int | slice) -> str | list[str]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._n))]
        i = int(k) + self._n if int(k) < 0 else int(k)
        if not 0 <= i < self._n:
            raise IndexError(f"client {k} out of range for {self._n} clients")
        return f"f_{i:05d}"

    def __iter__(self) -> Iterator[str]:
        return (f"f_{i:05d}" for i in range(self._n))


def load_lazy_synthetic_pool(
    num_clients: int, alpha: float, beta: float, iid: bool, seed: int
) -> Pool:
    """Synthetic(α, β) generated per client on first touch (see the module docstring).

    Same layout as :func:`load_synthetic_pool` — client k's 90 % part is the k-th contiguous
    block of the training pool, its 10 % part the k-th block of the central test set — with the
    clients as :class:`NodeIndices` ranges (no index arrays).
    """
    gen = LazySynthetic(num_clients, alpha, beta, iid, seed)
    return Pool(
        train=LazySyntheticSource(gen, "train"),
        test=LazySyntheticSource(gen, "test"),
        num_classes=NUM_CLASSES,
        input_shape=(DIMENSION,),
        clients=NodeIndices.ranges(gen.train_sizes),  # type: ignore[arg-type]
        client_names=_ClientNames(num_clients),  # type: ignore[arg-type]
    )
