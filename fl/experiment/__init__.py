"""An experiment: a config (`config`), built once into data, devices, grid and strategy
(`build`), run through a loop into a results folder (`run`, `results`, `plots`), or many of them
(`sweep`)."""

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
