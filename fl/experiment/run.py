"""Run an experiment: its built pieces through the synchronous or the asynchronous loop, into
a results folder (with checkpoints, resumable), ending in an error when nothing was learnt."""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl.experiment.build import Experiment, central_evaluator, seed_everything, train_config_record
from fl.experiment.config import RUN_ONLY_KEYS, ExperimentConfig, load_config
from fl.experiment.live import Monitor
from fl.experiment.results import MESSAGE_COLUMNS, RunResult, write_results
from fl.loops.asynchronous import AsyncSettings, run_async
from fl.loops.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    LoopState,
    load,
    restore_rng,
    rng_states,
    save,
)
from fl.loops.common import LoopResult
from fl.loops.synchronous import LoopSettings, run_rounds
from fl.schema import to_toml
from fl.sim.grid import VirtualGrid
from fl.strategies.asynchronous import AsyncStrategy
from fl.strategies.registry import ASYNC_STRATEGIES

log = logging.getLogger("fl")

FAILURE_FILE = "failure.txt"
"""Written into a results folder whose run learnt nothing: why (see `nothing_learnt`)."""


class RunFailedError(RuntimeError):
    """A run ended in which no round aggregated (no model update was applied): nothing was
    learnt. The message says why (the first client error or rejection); `run` is the run."""

    def __init__(self, message: str, run: RunResult) -> None:
        super().__init__(message)
        self.run = run


def _what(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without its run-only keys (what a resumed run must keep)."""
    return {k: v for k, v in config.items() if k not in RUN_ONLY_KEYS}


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    progress: bool = False,
    strategy: Strategy | None = None,
    quiet_flower: bool = True,
    grid: Grid | None = None,
    resume: Checkpoint | None = None,
    plots: bool = True,
) -> RunResult:
    """Run `cfg` on the virtual grid (or on `grid`, e.g. the Grid Flower's engines hand a
    ServerApp: then times are wall-clock seconds); write the results folder if `out_dir` is
    given, and with `cfg.checkpoint_every` > 0 a resumable checkpoint into it every that many
    rounds (asynchronous strategies: model updates). `resume` continues from a checkpoint
    (see `resume_experiment`). `plots` False leaves the PNGs out of the folder (and matplotlib
    unimported).

    While it runs, the folder's rounds.csv, messages.csv and status.json are kept current
    (`fl.experiment.live`), and with `progress` a progress bar goes to stderr. Ctrl-C flushes
    them, marks the status interrupted, says on stderr how to go on, and re-raises.

    Flower's per-round INFO logs are silenced unless `quiet_flower` is False (the rounds
    table and the progress bar carry the same information); the logger is restored
    afterwards. Raises `RunFailedError` (after writing the results folder) if no round
    aggregated anything.
    """
    wall0 = time.perf_counter() - (resume.wall_s if resume else 0.0)
    # Tiny per-client models run far faster on one intra-op thread (a 2-thread pool
    # spin-waits: measured 0.16 vs 10.8 ms per MLP step on a loaded 2-core machine).
    torch.set_num_threads(cfg.torch_threads)
    monitor = Monitor(
        cfg,
        out_dir,
        unit=_unit(cfg, resume.strategy if resume else strategy),
        progress=progress,
        start_rows=resume.loop.rows if resume else None,
        start_wall=resume.wall_s if resume else 0.0,
    )
    try:
        with flower_logs(quiet_flower):
            exp = Experiment.build(cfg, grid=grid, strategy=strategy, resume=resume)
            result = _run(exp, out_dir, monitor, resume)
        run = RunResult(
            config=cfg,
            rows=result.rows,
            arrays=result.arrays,
            grid=exp.grid,
            stop_reason=result.stop_reason,
            wall_s=time.perf_counter() - wall0,
            out_dir=Path(out_dir) if out_dir is not None else None,
        )
        problem = nothing_learnt(run)
        if out_dir is not None:
            write_results(
                run, plots=plots
            )  # the final tables: the same bytes as the live ones', settled
            failure = Path(out_dir) / FAILURE_FILE
            failure.unlink(missing_ok=True)
            if problem is not None:  # beside the results: Flower's engines report it from here
                failure.write_text(problem + "\n")
    except KeyboardInterrupt:
        monitor.interrupted()
        raise
    except Exception as exc:  # say why beside the results (Flower's engines report it)
        first = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        if out_dir is not None and Path(out_dir).is_dir():
            (Path(out_dir) / FAILURE_FILE).write_text(first + "\n")
        monitor.end("failed", error=first)
        raise
    state = "finished" if problem is None else "failed"
    monitor.end(state, stop_reason=run.stop_reason, error=problem, wall_time_s=run.wall_s)
    if problem is not None:
        raise RunFailedError(problem, run)
    return run


@contextmanager
def flower_logs(quiet: bool) -> Iterator[None]:
    """Flower's logger at WARNING (`quiet`) or INFO for a run; afterwards, also after an
    exception, its level, handlers, filters and propagation are as they were (a library
    call must not leave the caller's logging changed)."""
    flwr_log = logging.getLogger("flwr")
    level, handlers, filters = flwr_log.level, list(flwr_log.handlers), list(flwr_log.filters)
    propagate, disabled = flwr_log.propagate, flwr_log.disabled
    flwr_log.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        flwr_log.setLevel(level)
        flwr_log.handlers[:] = handlers
        flwr_log.filters[:] = filters
        flwr_log.propagate, flwr_log.disabled = propagate, disabled


def _unit(cfg: ExperimentConfig, strategy: Strategy | None) -> str:
    """What a run counts: rounds (synchronous) or model updates (asynchronous strategies)."""
    if strategy is not None:
        return "update" if isinstance(strategy, AsyncStrategy) else "round"
    return "update" if cfg.strategy.name in ASYNC_STRATEGIES else "round"


def nothing_learnt(run: RunResult) -> str | None:
    """Why no round of `run` aggregated anything (None if some did)."""
    rows = [r for r in run.rows if int(r.get("round", 0)) > 0]
    if any(r.get("aggregated", True) for r in rows):
        return None
    first = ""
    for row in rows:
        for key in ("failed", "rejected"):
            if row.get(key):
                first = first or f"{key}: {str(row[key]).split('; ')[0]}"
    done = f"{len(rows)} rounds" if rows else "no round"
    return (
        f"nothing was learnt: {done} ran and none aggregated an update "
        f"(stop reason: {run.stop_reason}){'; first problem: ' + first if first else ''}"
    )


def _run(
    exp: Experiment, out_dir: str | Path | None, monitor: Monitor, resume: Checkpoint | None
) -> LoopResult:
    """The loop part of a run: settings, RNG state, output folder, checkpoints, the loop."""
    cfg, grid, strategy = exp.config, exp.grid, exp.strategy
    settings = LoopSettings(
        num_rounds=cfg.rounds,
        timeout=cfg.round_timeout_s,
        time_budget=cfg.time_budget_s,
        eval_every=cfg.evaluation.every,
        federated_eval=cfg.evaluation.federated,
        server_time_factor=cfg.server_time_factor,
        train_config=train_config_record(cfg),
    )
    seed_everything(cfg.seed)  # the same RNG state whatever the set-up did
    if resume is not None:
        restore_rng(resume.rng)
    if isinstance(grid, VirtualGrid):
        grid.activate()
    central = (
        central_evaluator(exp.workspace, cfg.evaluation.class_recall)
        if cfg.evaluation.central
        else None
    )
    _check_resumable(cfg, resume)
    save_to = _prepare_folder(cfg, out_dir, resume, isinstance(grid, VirtualGrid), monitor, grid)
    checkpoint = _checkpointer(exp, save_to, monitor) if save_to is not None else None
    try:
        if isinstance(strategy, AsyncStrategy):  # `rounds` counts model updates
            return run_async(
                strategy,
                grid,
                exp.initial,
                AsyncSettings(
                    max_updates=cfg.rounds,
                    timeout=cfg.round_timeout_s,
                    time_budget=cfg.time_budget_s,
                    eval_every=cfg.evaluation.every,
                    train_config=settings.train_config,
                ),
                central_eval=central,
                on_update=monitor.on_row,
                start=resume.loop if resume else None,
                checkpoint=checkpoint,
                checkpoint_every=cfg.checkpoint_every,
            )
        return run_rounds(
            strategy,
            grid,
            exp.initial,
            settings,
            central_eval=central,
            on_round=monitor.on_row,
            start=resume.loop if resume else None,
            checkpoint=checkpoint,
            checkpoint_every=cfg.checkpoint_every,
        )
    finally:
        close = getattr(getattr(grid, "executor", None), "close", None)
        if close is not None:
            close()  # e.g. stop the process executor's workers
        monitor.close()


def _check_resumable(cfg: ExperimentConfig, resume: Checkpoint | None) -> None:
    """A resumed run must continue the same experiment (run-only keys may change)."""
    if resume is None or not resume.config:
        return
    saved, now = _what(resume.config), _what(cfg.to_dict())
    if saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ValueError(
            f"config.toml differs from the checkpoint's config (in {', '.join(changed)}): "
            "a resumed run must continue the same experiment"
        )


def _prepare_folder(
    cfg: ExperimentConfig,
    out_dir: str | Path | None,
    resume: Checkpoint | None,
    virtual: bool,
    monitor: Monitor,
    grid: Grid,
) -> Path | None:
    """Start the live files (status, rounds, messages: a resumed run's from its checkpoint),
    then write config.toml (a killed run can be resumed from its folder); clear an older
    run's checkpoint and summary; the checkpoint path if this run saves checkpoints."""
    checkpoints = cfg.checkpoint_every > 0 and virtual
    if out_dir is None:
        monitor.open(grid, MESSAGE_COLUMNS, checkpoints=False)
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    monitor.open(grid, MESSAGE_COLUMNS, checkpoints=checkpoints)
    (out / "config.toml").write_text(to_toml(cfg.to_dict()))
    (out / FAILURE_FILE).unlink(missing_ok=True)
    if resume is None:  # an older run's checkpoint and summary are not this run's
        (out / CHECKPOINT_FILE).unlink(missing_ok=True)
        (out / "summary.json").unlink(missing_ok=True)
    return out / CHECKPOINT_FILE if checkpoints else None


def _checkpointer(exp: Experiment, save_to: Path, monitor: Monitor) -> Callable[[LoopState], None]:
    """The loops' checkpoint callback: save the loop state with the grid, the strategy and
    the RNG states (and tell `monitor`); a state that cannot be pickled disables checkpoints
    (with a warning)."""
    failed: list[str] = []

    def checkpoint(state: LoopState) -> None:
        if failed:
            return
        ckpt = Checkpoint(
            state, exp.grid, exp.strategy, rng_states(), state.extra["wall_s"], exp.config.to_dict()
        )
        try:
            save(save_to, ckpt)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            # e.g. a strategy holding a lambda: the run goes on, without checkpoints
            failed.append(str(exc))
            log.warning("checkpoints disabled: the run's state cannot be saved (%s)", exc)
            return
        monitor.checkpointed(int(state.rows[-1]["round"]) if state.rows else 0)

    return checkpoint


def resume_experiment(out_dir: str | Path, *, progress: bool = False) -> RunResult:
    """Continue the run whose results folder is `out_dir` from its last checkpoint; the
    finished run is the same, bit for bit, as one that was never interrupted."""
    out = Path(out_dir)
    cfg = load_config(out / "config.toml")
    return run_experiment(cfg, out, progress=progress, resume=load(out / CHECKPOINT_FILE))
