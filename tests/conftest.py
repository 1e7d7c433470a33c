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
