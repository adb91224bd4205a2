"""The showcase end to end: a small cast on the embedded defaults, exact match."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from mpshield.demo.run import DemoConfig, run_demo
from mpshield.demo.scenario import Cast

pytestmark = pytest.mark.slow


def test_small_demo_matches_the_sandbox_exactly(tmp_path: Path) -> None:
    """Every special case behaves as expected and every healthy feed matches."""
    output = io.StringIO()
    config = DemoConfig(
        cast=Cast.small(), period=1.0, live_seconds=1.0, home=tmp_path / "demo"
    )

    result = run_demo(config, Console(file=output, width=120))

    text = output.getvalue()
    assert result.ok, text
    assert "RESULT: exact match" in text
    disabled = {shop_id for shop_id in result.verdict.disabled}
    assert len(disabled) == 3  # one revoked, one deactivated, one expired
    assert result.verdict.not_disabled == []
    assert result.verdict.wrongly_disabled == []
