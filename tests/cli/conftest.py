"""Fixtures of the CLI fault tests (no PEFT: they run in `make test-min` too)."""

from __future__ import annotations

import pytest

from tests.cli.test_core_install import write_adapter


@pytest.fixture()
def pair(tmp_path):
    """Two hand-written adapters on one (unnamed local) base: a (RSLoRA r 4) and b (plain LoRA r 4)."""
    write_adapter(tmp_path / "a", seed=1, r=4, alpha=8, rslora=True)
    write_adapter(tmp_path / "b", seed=2, r=4, alpha=8, rslora=False)
    return tmp_path / "a", tmp_path / "b"
