"""Checkpoints of a run on the virtual grid: everything needed to continue it bit for bit.

A checkpoint is one pickle holding the loop's position (next round or model version, the rows so
far, the current model), the strategy object (TiFL's tiers and credits, BGMD's memory, AdaSGD's
histograms, a FedBuff buffer, ...), the virtual grid (clock, pending replies, per-node contexts
and message counters, outcomes) and the global RNG states (python `random`, which Flower samples
nodes with; numpy; torch). Everything else a run uses is a deterministic function of the config.

Writes are atomic: the pickle goes to a temporary file in the same directory, is flushed to disk,
and replaces the previous checkpoint with `os.replace`, so a run killed mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pkl"
FORMAT = 3  # 2: the package layout of fl 0.2 (fl.loops, fl.sim.mailbox); 3: async defences


@dataclass
class LoopState:
    """Where a loop stands: the next round (sync) or the model version reached (async)."""

    next_round: int
    rows: list[dict[str, Any]]
    arrays: Any  # ArrayRecord
    extra: dict[str, Any] = field(default_factory=dict)  # loop-specific (async: in-flight ids)


@dataclass
class Checkpoint:
    """A resumable run."""

    loop: LoopState
    grid: Any
    strategy: Any
    rng: tuple[Any, Any, Any]
    wall_s: float = 0.0  # wall time spent before the checkpoint
    config: dict[str, Any] = field(default_factory=dict)  # the run's resolved config
    format: int = FORMAT


def rng_states() -> tuple[Any, Any, Any]:
    """The global RNG states a run draws from."""
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def restore_rng(states: tuple[Any, Any, Any]) -> None:
    """Put the global RNGs back where a checkpoint left them."""
    py, npy, tch = states
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(tch)


def save(path: str | Path, ckpt: Checkpoint) -> None:
    """Write `ckpt` to `path` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_cache = getattr(ckpt.grid, "_bytes_cache", None)
    if grid_cache is not None:
        ckpt.grid._bytes_cache = (None, 0)  # a size cache keyed by object identity
    for stale in path.parent.glob(".checkpoint-*"):  # left by a run killed mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(ckpt, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dfd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def load(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save` (errors name the file and what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (was the run started with checkpoints?)")
    with path.open("rb") as fh:
        try:
            ckpt = pickle.load(fh)
        except Exception as exc:
            raise ValueError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(ckpt, Checkpoint) or ckpt.format != FORMAT:
        raise ValueError(f"{path} is not a checkpoint of this version of fl")
    return ckpt
