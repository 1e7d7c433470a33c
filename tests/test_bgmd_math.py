"""BGMD block selection, memory and aggregation (fl.robust.bgmd)."""

from __future__ import annotations

import pytest
import torch

from fl.robust.bgmd import block_geometric_median, select_block
from fl.robust.geomedian import geometric_median


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("k", [1, 7, 50, 200])
def test_topk_returns_the_k_largest_column_norms(k: int) -> None:
    G = (
        randn(12, 200, seed=1)
        * torch.linspace(0.1, 5.0, 200, dtype=torch.float64)[torch.randperm(200)]
    )
    block = select_block(G, k)
    assert block.shape == (k,) and torch.equal(block, block.sort().values)
    norms = G.norm(dim=0)
    assert set(block.tolist()) == set(norms.argsort(descending=True)[:k].tolist())


def test_sample_is_seeded_and_favours_large_columns() -> None:
    scale = torch.linspace(1.0, 20.0, 20, dtype=torch.float64)
    G = randn(8, 20, seed=2).sign() * scale  # column j has norm sqrt(8)·scale_j exactly
    G[:, 5] = 0.0  # a zero column is never sampled while enough others have mass
    a = select_block(G, 5, "sample", torch.Generator().manual_seed(3))
    b = select_block(G, 5, "sample", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and len(set(a.tolist())) == 5
    gen = torch.Generator().manual_seed(4)
    counts = torch.zeros(20)
    trials = 2000
    for _ in range(trials):
        counts[select_block(G, 5, "sample", gen)] += 1
    assert counts[5] == 0
    assert counts.sum() == 5 * trials
    # Inclusion frequencies match torch.multinomial's successive sampling ∝ squared norm, an
    # independent implementation of the same distribution (within 4.5 standard errors).
    ref = torch.zeros(20)
    mgen = torch.Generator().manual_seed(5)
    for _ in range(trials):
        ref[torch.multinomial(G.norm(dim=0) ** 2, 5, replacement=False, generator=mgen)] += 1
    p_hat = (counts + ref) / (2 * trials)
    se = (2 * p_hat * (1 - p_hat) / trials).sqrt()
    assert bool(((counts - ref).abs() / trials <= 4.5 * se + 1e-9).all())
    # they grow with the norm: the largest column is in ~60 % of draws, the smallest ~0.3 %
    assert counts[19] > 50 * counts[0]
    ranks = counts.argsort().argsort().double()
    assert torch.corrcoef(torch.stack([ranks, scale]))[0, 1] > 0.95


@pytest.mark.parametrize("method", ["weiszfeld", "vardi"])
def test_beta_one_is_plain_geometric_median(method: str) -> None:
    gm_kwargs = {"method": method, "tol": 1e-10, "max_iter": 500}
    memory = torch.zeros(30, dtype=torch.float64)
    for t in range(4):
        G = randn(9, 30, seed=10 + t) + 0.5 * t
        res = block_geometric_median(G, memory, 1.0, gm_kwargs=gm_kwargs)
        assert torch.equal(res.block, torch.arange(30))
        torch.testing.assert_close(
            res.step, geometric_median(G, **gm_kwargs).median, rtol=1e-7, atol=1e-9
        )
        assert torch.equal(res.memory, torch.zeros(30, dtype=torch.float64))
        memory = res.memory


@pytest.mark.parametrize("selector", ["topk", "sample"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mean_aggregate_conserves_mass(selector: str, dtype: torch.dtype) -> None:
    d, T = 500, 12
    memory = torch.zeros(d, dtype=dtype)
    applied = torch.zeros(d, dtype=torch.float64)
    total = torch.zeros(d, dtype=torch.float64)
    w = torch.rand(7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    gen = torch.Generator().manual_seed(1)
    for t in range(T):
        G = (randn(7, d, seed=100 + t) * torch.rand(d, generator=gen, dtype=torch.float64) * 3).to(
            dtype
        )
        res = block_geometric_median(
            G, memory, 0.05, selector=selector, aggregate="mean", weights=w, generator=gen
        )
        assert res.gm is None and res.block.numel() == 25
        assert torch.equal(res.memory[res.block], torch.zeros(25, dtype=dtype))
        off = torch.ones(d, dtype=torch.bool)
        off[res.block] = False
        assert torch.equal(res.step[off], torch.zeros(int(off.sum()), dtype=dtype))
        applied += res.step.double()
        total += (w / w.sum()) @ G.double()
        memory = res.memory
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(applied + memory.double(), total, rtol=tol, atol=tol)
    assert float(memory.norm()) > 0  # something is still in flight


def test_memory_is_zero_on_block_and_gm_on_block() -> None:
    G = randn(10, 400, seed=20)
    memory = randn(400, seed=21)
    res = block_geometric_median(G, memory, 0.1, gm_kwargs={"tol": 1e-10, "max_iter": 500})
    k = 40
    assert res.block.shape == (k,)
    Gm = G + memory
    assert set(res.block.tolist()) == set(Gm.norm(dim=0).argsort(descending=True)[:k].tolist())
    assert torch.equal(res.memory[res.block], torch.zeros(k, dtype=torch.float64))
    off = torch.ones(400, dtype=torch.bool)
    off[res.block] = False
    torch.testing.assert_close(res.memory[off], Gm.mean(0)[off])
    expected = geometric_median(Gm[:, res.block], tol=1e-10, max_iter=500).median
    torch.testing.assert_close(res.step[res.block], expected, rtol=1e-7, atol=1e-9)
    assert res.gm is not None and res.gm.converged


def test_median_memory_ignores_a_minority_of_huge_rows() -> None:
    d = 300
    honest = randn(10, d, seed=30) * 0.1 + 1.0
    G = honest.clone()
    G[:4] = 1e6  # 4 of 10 rows corrupted
    memory = torch.zeros(d, dtype=torch.float64)
    # tol: RFA's relative-objective rule stops early when far outliers dominate the objective
    gm_kwargs = {"tol": 1e-10}
    mean = block_geometric_median(G, memory, 0.1, memory_reduce="mean", gm_kwargs=gm_kwargs)
    med = block_geometric_median(G, memory, 0.1, memory_reduce="median", gm_kwargs=gm_kwargs)
    off = torch.ones(d, dtype=torch.bool)
    off[med.block] = False
    assert float(mean.memory[off].abs().min()) > 1e5  # the faithful mean memory is poisoned
    honest_range = (honest.min(0).values[off], honest.max(0).values[off])
    assert bool(
        (med.memory[off] >= honest_range[0]).all() and (med.memory[off] <= honest_range[1]).all()
    )
    assert float((med.memory[off] - 1.0).abs().max()) < 0.5
    # and the block's GM also ignores them
    assert float((med.step[med.block] - 1.0).abs().max()) < 0.5


def test_float32_dtype_and_errors() -> None:
    G = randn(6, 50, seed=40, dtype=torch.float32)
    res = block_geometric_median(G, torch.zeros(50), 0.2)
    assert res.step.dtype == res.memory.dtype == torch.float32 and res.block.numel() == 10
    assert block_geometric_median(G, torch.zeros(50), 1e-9).block.numel() == 1  # k ≥ 1
    with pytest.raises(ValueError, match="memory must be a tensor of shape"):
        block_geometric_median(G, torch.zeros(49), 0.1)
    with pytest.raises(ValueError, match="beta = 0 is invalid"):
        block_geometric_median(G, torch.zeros(50), 0)
    with pytest.raises(ValueError, match="memory_reduce = 'gm' is invalid"):
        block_geometric_median(G, torch.zeros(50), 0.1, memory_reduce="gm")
    with pytest.raises(ValueError, match="selector = 'random' is invalid"):
        block_geometric_median(G, torch.zeros(50), 0.1, selector="random")
    bad = G.clone()
    bad[2, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        block_geometric_median(bad, torch.zeros(50), 0.1)
    with pytest.raises(ValueError, match="k = 51 is invalid"):
        select_block(G, 51)
