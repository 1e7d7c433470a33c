"""The Flower App: the same experiments on Flower's own engines (`flwr run .`).

`serverapp` reads the experiment from `context.run_config` (the flat form of `ExperimentConfig`:
the `[tool.flwr.app.config]` defaults in pyproject.toml, overridden by `--run-config`, one schema
with `fl-sim run`), builds the strategy by name and runs it with the project's loops: synchronous
strategies through `fl.loops.synchronous.run_rounds` (Flower's `Strategy.start` plus the study's
bookkeeping), asynchronous ones through `fl.loops.asynchronous.run_async` (push/pull). It writes the
same results folder as a virtual-grid run, with wall-clock seconds in place of virtual ones.
`clientapp` is the project's ClientApp (`fl.client.app`).

On Flower's engines there is no device model (times are real), and a config with an attack or
a lie is refused (the attack wrappers live in the virtual grid, and ``fast_lane`` permutes its
simulated devices: real devices cannot be reassigned).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fl.client import app as clientapp
from fl.experiment.config import ExperimentConfig
from fl.sim.attacks import is_active

__all__ = ["clientapp", "serverapp"]

serverapp = ServerApp()
log = logging.getLogger("flwr")


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment `context.run_config` describes and write its results folder."""
    from fl.experiment import run_experiment
    from fl.experiment.results import summary

    cfg = ExperimentConfig.from_run_config(context.run_config)
    if is_active(cfg.attack) and cfg.attack.fraction > 0:
        raise ValueError(
            f"attack.kind = {cfg.attack.kind!r}, attack.lies = {list(cfg.attack.lies)}: attacks "
            "wrap ClientApps (and fast_lane permutes simulated devices) inside the virtual grid "
            "and are not applied on Flower's engines; run it with fl-sim on the virtual grid"
        )
    if cfg.faults.active:
        raise ValueError(
            "faults: fault injection wraps ClientApps inside the virtual grid and is not "
            "applied on Flower's engines; run it with fl-sim on the virtual grid"
        )
    out = Path(cfg.output_dir) / cfg.name
    wait_for_nodes(grid, cfg.num_nodes)
    result = run_experiment(cfg, out, grid=grid, quiet_flower=False)
    log.info("fl: %s", json.dumps(summary(result)))
    log.info("fl: results in %s", out.resolve())


def wait_for_nodes(grid: Grid, n: int, timeout_s: float = 300.0) -> None:
    """Wait (wall clock) until `n` nodes are connected: a Deployment Engine's SuperNodes
    register one by one, and a run that starts early would sample fewer nodes."""
    deadline = time.monotonic() + timeout_s
    while len(list(grid.get_node_ids())) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(list(grid.get_node_ids()))} of num_nodes = {n} nodes connected within "
                f"{timeout_s:.0f} s: start {n} SuperNodes (partition-id 0..{n - 1})"
            )
        time.sleep(0.5)
