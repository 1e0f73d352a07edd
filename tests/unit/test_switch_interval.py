"""The daemon's GIL switch interval: set when the interpreter has its default, left alone otherwise."""
from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from gateway.cli import SWITCH_INTERVAL_S, tune_switch_interval


@pytest.fixture
def restore_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_default_interval_is_replaced(restore_interval: None) -> None:
    sys.setswitchinterval(0.005)
    assert tune_switch_interval() == pytest.approx(SWITCH_INTERVAL_S)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)


def test_an_interval_chosen_before_start_is_kept(restore_interval: None) -> None:
    sys.setswitchinterval(0.0007)  # e.g. bench/run.py --switch-interval
    assert tune_switch_interval() == pytest.approx(0.0007)
