"""Test-wide settings: offline hubs, one torch thread per test worker."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


def load_simulation(name: str):  # type: ignore[no-untyped-def]
    """Import simulations/<name>/run.py as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "simulations" / name / "run.py"
    spec = importlib.util.spec_from_file_location(f"{name}_run", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Run the slow end-to-end checks first. With `-n 2 --maxschedchunk 1` (`make test`) each
    worker takes the next test when it is free, so the long ones start at once and the many
    short ones fill the gaps, instead of one long test starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


WALL_COLUMNS = ("wall_time", "aggregation_wall_s")
"""rounds.csv columns that measure the simulation's own wall time (they differ run to run)."""


def same_run(a, b) -> None:  # type: ignore[no-untyped-def]
    """Assert two results folders hold the same run: equal final model (bit for bit), equal
    rounds.csv but for its wall-time columns, identical messages.csv."""
    from fl.experiment.tables import read_csv

    sa, sb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ra, rb = read_csv(a / "rounds.csv"), read_csv(b / "rounds.csv")
    strip = [{k: v for k, v in r.items() if k not in WALL_COLUMNS} for r in ra]
    assert strip == [{k: v for k, v in r.items() if k not in WALL_COLUMNS} for r in rb]
    assert (a / "messages.csv").read_text() == (b / "messages.csv").read_text()
