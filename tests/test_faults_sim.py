"""The fault-injection experiment's --quick variant: every round completes under each fault,
and a killed-and-resumed run equals the uninterrupted one (~35 s)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_faults_quick_loses_no_round(tmp_path: Path) -> None:
    from conftest import load_simulation

    results = load_simulation("faults").main(["--quick", "--out", str(tmp_path)])
    assert len(results) == 18  # 2 strategies × (8 faults + kill-and-resume)
    failed = [(claim, value) for claim, ok, value in results if not ok]
    assert not failed, failed
    assert (tmp_path / "table.md").is_file()
