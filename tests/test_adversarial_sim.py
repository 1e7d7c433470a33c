"""The adversarial experiment's --quick variant: the table's key claims on its seed-0 cells of
the synchronous strategies (~1–2 min)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_adversarial_quick_key_claims_hold(tmp_path: Path) -> None:
    from conftest import load_simulation

    adversarial = load_simulation("adversarial")
    results = adversarial.main(["--quick", "--workers", "1", "--out", str(tmp_path)])
    claims = {claim: (ok, value) for claim, ok, value in results}
    # The quick subset evaluates the FedAvg, GM and TiFL claims (not FedBuff's or AdaSGD's).
    assert len(claims) == 7, claims
    failed = {c: v for c, (ok, v) in claims.items() if not ok}
    assert not failed, failed
    for name in ("table.md", "cells.csv", "accuracy.png", "malicious_share.png"):
        assert (tmp_path / name).is_file()
