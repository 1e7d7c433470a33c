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
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from fl.data.pool import Pool
from fl.data.sources import TensorSource

__all__ = [
    "DIMENSION",
    "NUM_CLASSES",
    "client_sizes",
    "generate_synthetic",
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
