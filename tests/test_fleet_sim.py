"""The FLeet experiment's --quick variant: the issue's targets on digits, one seed (~70 s)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_fleet_quick_meets_the_targets(tmp_path: Path) -> None:
    from conftest import load_simulation

    fleet = load_simulation("fleet")
    results = fleet.main(["--quick", "--workers", "1", "--out", str(tmp_path)])
    claims = {claim: (ok, value) for claim, ok, value in results}
    assert len(claims) == 8, claims
    failed = {c: v for c, (ok, v) in claims.items() if not ok}
    assert not failed, failed
    assert (tmp_path / "table.md").is_file() and (tmp_path / "a_straggler.png").is_file()
