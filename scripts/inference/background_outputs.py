"""Write a case's outputs in a background thread while the next case is segmented.

Measuring and writing a case (the report, the QC figure's rendering and PNG encoding, the segmentation's gzip) take
about a third of a scan's time on two CPU cores and need nothing from the next case, so inference hands them to one
background thread and goes on: the data loader's workers read case k + 1 and the network segments it while case k
is written. One case is written at a time: a new case waits for the previous one's outputs, so at most one case's
images are held for writing. MONAI's post-processing runs in the engine's thread, hence this wrapper; it is also an
Ignite handler, so the engine waits for the last case before its epoch ends (before ``metrics.csv`` is built from
the cases' reports), and an error in writing a case stops the run as it would without the thread, a case later.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ignite.engine import Engine, Events


class InBackground:
    """Run ``transform`` on each case in one background thread and hand the case on unchanged at once.

    ``transform`` must only read the case (it writes files); its result is dropped. Attach to the engine (MONAI's
    ``val_handlers``, before any handler that reads what ``transform`` writes) to wait for the last case when an
    epoch completes."""

    def __init__(self, transform: Callable[[Mapping[Hashable, Any]], Any]) -> None:
        self.transform = transform
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="case-outputs")
        self._pending: Future | None = None

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        self.wait()
        self._pending = self._thread.submit(self.transform, dict(data))
        return data

    def wait(self, _: Engine | None = None) -> None:
        """Block until the case being written is written; raise its error if writing it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.wait)
