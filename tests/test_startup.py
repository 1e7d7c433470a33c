"""Start-up cost (issue 16): a small run imports none of the heavy modules it does not need.

- digits are read from scikit-learn's data file without importing scikit-learn, split exactly
  as ``train_test_split`` splits them;
- the FLOP counts of the project's own models are analytic (torch's FLOP counter imports
  ``torch._dynamo``; tests/test_flops_analytic.py pins the counts to the counter's);
- the ``iid`` partition is computed with numpy (fl/data/partition.py), not flwr-datasets;
- matplotlib is imported only when plots are written.

Assertions are on ``sys.modules`` of a fresh interpreter, never on seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fl.data import digits

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# Digits without scikit-learn: the same arrays as scikit-learn's functions give.


def _sklearn_reference() -> tuple[np.ndarray, ...]:
    """The split as fl/data/digits.py made it before: through scikit-learn."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return x_tr, y_tr, x_te, y_te


def _assert_identical(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bit for bit, in the same order


def test_digits_file_is_found_without_importing_sklearn() -> None:
    path = digits.digits_file()
    assert path is not None and path.name == "digits.csv.gz"
    assert path.parent.parts[-3:] == ("sklearn", "datasets", "data")


def test_digits_arrays_are_identical_to_sklearns() -> None:
    digits._digits_arrays.cache_clear()
    try:
        got = digits._digits_arrays()
    finally:
        digits._digits_arrays.cache_clear()
    want = _sklearn_reference()
    _assert_identical(got, want)
    assert [len(a) for a in got] == [1437, 1437, 360, 360]


def test_without_the_data_file_sklearn_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digits, "digits_file", lambda: None)
    digits._digits_arrays.cache_clear()
    try:
        _assert_identical(digits._digits_arrays(), _sklearn_reference())
    finally:
        digits._digits_arrays.cache_clear()


@pytest.mark.parametrize(
    ("n", "classes", "fraction", "seed"),
    [(1797, 10, 0.2, 0), (1797, 10, 0.2, 7), (500, 3, 0.25, 1), (101, 7, 0.33, 2), (60, 2, 0.5, 3)],
)
def test_stratified_split_is_train_test_split(
    n: int, classes: int, fraction: float, seed: int
) -> None:
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    y[:classes] = np.arange(classes)  # every class present
    y[classes : 2 * classes] = np.arange(classes)  # at least twice
    idx = np.arange(n)
    want_tr, want_te = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    got_tr, got_te = digits.stratified_split(y, fraction, seed)
    assert np.array_equal(got_tr, want_tr) and np.array_equal(got_te, want_te)


# ---------------------------------------------------------------------------------------------
# A 3-round, 10-node digits run in a fresh interpreter: which modules it imported.

NEVER = ("sklearn", "matplotlib", "flwr_datasets")
"""Modules a plain run (no plots written) must not import at all. flwr-datasets (and with it
datasets, pandas, scipy, seaborn and matplotlib) only partitions other than ``iid`` need."""
NOT_TO_BUILD = (*NEVER, "torch._dynamo")
"""Modules building the run (data, models, FLOP counts, grid, strategy) must not import.
Training does import torch._dynamo today, outside fl's control: ``torch.optim`` optimizers
import it on construction (``torch._compile._disable_dynamo``) and ``torch.func.grad`` (the
batched executor) on every call."""

_SCRIPT = """
import json, sys
from fl.experiment import Experiment, load_dict, run_experiment

watch = json.loads(sys.argv[1])
cfg = load_dict({"name": "small", "num_nodes": 10, "rounds": 3, "data": {"name": "digits"}})
Experiment.build(cfg)
built = [m for m in watch if m in sys.modules]
run = run_experiment(cfg)
ran = [m for m in watch if m in sys.modules]
rounds = max(int(r["round"]) for r in run.rows)
print(json.dumps({"built": built, "ran": ran, "rounds": rounds}))
"""


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def _fresh_run() -> dict[str, list[str] | int]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(sorted({*NOT_TO_BUILD, *NEVER}))],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_small_digits_run_imports_no_heavy_modules() -> None:
    out = _fresh_run()
    assert out["rounds"] == 3
    assert out["built"] == [], f"building the run imported {out['built']}"
    assert not set(out["ran"]) & set(NEVER), f"the run imported {out['ran']}"


def test_plots_tables_and_watch_load_without_torch_or_flower() -> None:
    # fl/experiment/__init__.py imports its names on first use: `fl-sim plot`, `compare` and
    # `watch` (and the simulation scripts' --report replots) need neither torch nor Flower.
    code = (
        "import sys, fl.experiment, fl.experiment.plots, fl.experiment.tables, "
        "fl.experiment.watch\n"
        "print(','.join(m for m in ('torch', 'flwr') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == ""


_CLI = """
import json, sys
from fl.cli import main

watch = json.loads(sys.argv[3])
sys.argv = ["fl-sim", "run", sys.argv[1], "--out", sys.argv[2], "--quiet", "--no-plots"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps([m for m in watch if m in sys.modules]))
"""


def test_cli_run_without_plots_imports_no_matplotlib(tmp_path: Path) -> None:
    config = tmp_path / "small.toml"
    config.write_text('name = "small"\nnum_nodes = 10\nrounds = 3\n[data]\nname = "digits"\n')
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-c", _CLI, str(config), str(out), json.dumps(NEVER)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert json.loads((out / "summary.json").read_text())["rounds_completed"] == 3
    assert (out / "rounds.csv").is_file() and not list(out.glob("*.png"))
