"""Writing a case in the background: the engine goes on at once, cases are written one at a time and all of them
before the epoch's later handlers run, and an error in writing stops the run."""

from __future__ import annotations

import threading
import time

import pytest
from ignite.engine import Engine, Events

from scripts.inference.background_outputs import InBackground


def test_the_case_is_handed_on_before_it_is_written():
    release, written = threading.Event(), []

    def write(case: dict) -> None:
        release.wait(timeout=10)
        written.append(case["id"])

    writer = InBackground(write)
    case = {"id": "sub01"}
    assert writer(case) is case  # returned while the write is still blocked
    assert written == []
    release.set()
    writer.wait()
    assert written == ["sub01"]


def test_cases_are_written_one_at_a_time_in_order_and_all_before_later_handlers():
    spans: dict[str, tuple[float, float]] = {}

    def write(case: dict) -> None:
        start = time.perf_counter()
        time.sleep(0.05)
        spans[case["id"]] = (start, time.perf_counter())

    writer = InBackground(write)
    engine = Engine(lambda _, case: writer(case))
    writer.attach(engine)
    seen_by_later_handler = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: seen_by_later_handler.append(sorted(spans)))
    engine.run([{"id": f"sub0{i}"} for i in range(1, 4)], max_epochs=1)

    assert seen_by_later_handler == [["sub01", "sub02", "sub03"]]
    ordered = [spans[f"sub0{i}"] for i in range(1, 4)]
    assert all(previous[1] <= following[0] for previous, following in zip(ordered, ordered[1:]))


def test_an_error_in_writing_stops_the_run():
    def write(case: dict) -> None:
        if case["id"] == "sub02":
            raise OSError("disk full")

    writer = InBackground(write)
    engine = Engine(lambda _, case: writer(case))
    writer.attach(engine)
    with pytest.raises(OSError, match="disk full"):
        engine.run([{"id": "sub01"}, {"id": "sub02"}], max_epochs=1)
