"""An experiment: a config (`config`), built once into data, devices, grid and strategy
(`build`), run through a loop into a results folder (`run`, `results`, `plots`), or many of them
(`sweep`).

The names below are imported on first use, so a submodule that needs neither torch nor Flower
(`plots`, `tables`, `watch`: what `fl-sim plot`, `compare` and `watch` use) loads without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fl.experiment.build import (
        Experiment,
        build_experiment_strategy,
        build_grid,
        central_evaluator,
        seed_everything,
        train_config_record,
    )
    from fl.experiment.config import ExperimentConfig, load_config, load_dict
    from fl.experiment.results import RunResult
    from fl.experiment.run import RunFailedError, resume_experiment, run_experiment

_EXPORTS = {
    "Experiment": "build",
    "build_experiment_strategy": "build",
    "build_grid": "build",
    "central_evaluator": "build",
    "seed_everything": "build",
    "train_config_record": "build",
    "ExperimentConfig": "config",
    "load_config": "config",
    "load_dict": "config",
    "RunResult": "results",
    "RunFailedError": "run",
    "resume_experiment": "run",
    "run_experiment": "run",
}

__all__ = [
    "Experiment",
    "ExperimentConfig",
    "RunFailedError",
    "RunResult",
    "build_experiment_strategy",
    "build_grid",
    "central_evaluator",
    "load_config",
    "load_dict",
    "resume_experiment",
    "run_experiment",
    "seed_everything",
    "train_config_record",
]


def __getattr__(name: str) -> Any:
    """Import an exported name's submodule on first use (or a submodule by its name)."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
