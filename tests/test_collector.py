"""The collector pause around parsing: off inside, as it was after, whatever happens inside."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from timebank_realtime.collector import collector_paused


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_the_collector_is_off_inside_and_back_on_after_even_after_an_error(collector_enabled: None) -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RecursionError), collector_paused():
        raise RecursionError
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off(collector_enabled: None) -> None:
    gc.disable()
    with collector_paused(), collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
