"""Segment a cohort so that one bad case, an interrupted run or a second run loses nothing.

- ``cases_to_run``: the cases whose outputs are not complete yet; a folder holding the
  outputs of a different run (other weights or settings) is refused unless ``overwrite``;
- ``FaultTolerantCases``: yields each preprocessed case; a case that cannot be read or
  checked is recorded as a failure instead of stopping the cohort;
- ``FailureReport``: at the end, one line per failed case and ``<output_dir>/failures.csv``; then, as the
  command's last step, it fails the run (non-zero exit) with a summary when any case failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ignite.engine import Engine, Events
from torch.utils.data import IterableDataset, get_worker_info

from scripts.atomic import write_atomically, write_csv_atomically
from scripts.distributed import barrier, is_main_process
from scripts.errors import InputError, plain_reason, traceback_wanted

logger = logging.getLogger(__name__)
OUTPUT_SUFFIXES = ("_seg.nii.gz", "_metrics.json", "_slices.csv", "_qc.png")
RUN_FILE = "run.json"
FAILURES_DIR = ".failures"
FAILURES_CSV = "failures.csv"


def case_outputs(output_dir: Path, case_id: str) -> list[Path]:
    return [output_dir / case_id / f"{case_id}{suffix}" for suffix in OUTPUT_SUFFIXES]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cases_to_run(
    entries: Sequence[dict], output_dir: str | Path, settings: dict, overwrite: bool = False
) -> list[dict]:
    """The entries still to segment into ``output_dir`` by a run with ``settings``.

    ``settings`` (weights file and inference settings) are recorded in ``<output_dir>/run.json``
    with the weights' sha256. If the folder holds outputs of a run with other settings, it is
    refused, unless ``overwrite``, which also redoes every case. Otherwise cases whose four
    outputs all exist (each is written whole or not at all) are skipped.
    """
    output_dir = Path(output_dir)
    run = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    run["checkpoint"] = str(Path(settings["checkpoint"]).resolve())  # the same file however it is named
    run["checkpoint_sha256"] = file_sha256(settings["checkpoint"])
    previous_path = output_dir / RUN_FILE
    previous = json.loads(previous_path.read_text(encoding="utf-8")) if previous_path.is_file() else None
    if previous is not None and previous != run and not overwrite:
        changed = sorted(k for k in run.keys() | previous.keys() if run.get(k) != previous.get(k))
        raise InputError(
            f"{output_dir} holds the outputs of a different run (differs in: {', '.join(changed)}). "
            "Choose another --output_dir, or pass --overwrite True to replace them."
        )
    write_atomically(previous_path, lambda p: p.write_text(json.dumps(run, indent=1), encoding="utf-8"))
    todo = [e for e in entries if overwrite or not all(p.is_file() for p in case_outputs(output_dir, str(e["id"])))]
    if len(todo) < len(entries):
        logger.info("%d of %d cases already done in %s: skipped", len(entries) - len(todo), len(entries), output_dir)
    logger.info("%d case(s) to segment into %s", len(todo), output_dir)
    return todo


class FaultTolerantCases(IterableDataset):
    """The cases of ``data`` after ``transform``, skipping (and recording) each case that fails.

    A case whose files cannot be read or fail the input checks is written, with its reason in plain words
    (``scripts.errors.plain_reason``), to ``<output_dir>/.failures/<id>.txt`` (from any loader worker), and the
    cohort goes on; ``FailureReport`` tells the user at the end. With ``LUMBAR_TRACEBACK=1`` the failure is also
    logged here, with its traceback. MONAI's datasets stop the whole run at the first bad case, hence this dataset.
    With several loader workers, each takes every n-th case.
    """

    def __init__(self, data: Sequence[dict], transform: Callable, output_dir: str | Path) -> None:
        self.data = list(data)
        self.transform = transform
        self.failures = Path(output_dir) / FAILURES_DIR

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        start, step = (worker.id, worker.num_workers) if worker else (0, 1)
        for entry in self.data[start::step]:
            try:
                yield self.transform(entry)
            except Exception as error:  # a bad case must not stop the cohort
                reason = plain_reason(error)
                if traceback_wanted():
                    logger.error("%s not segmented: %s", entry.get("id"), reason, exc_info=error)
                self.failures.mkdir(parents=True, exist_ok=True)
                (self.failures / f"{entry.get('id')}.txt").write_text(reason, encoding="utf-8")


class FailureReport:
    """Tell the user which cases failed and why, after every other case is done, and fail the command for them.

    When inference starts, old failure records are cleared. At its end, each failed case gets one line in the log
    (``<id> not segmented: <reason>``) and a row of ``<output_dir>/failures.csv`` (id, reason); then
    ``raise_if_failed``, the command's last step, raises an ``InputError`` (the command exits non-zero, with no
    traceback) whose message is the reason, for a run of one case, else how many of the run's ``cases`` were
    segmented and how many failed. With several ranks, rank 0 clears, logs and writes, and every rank raises.

    When cases fail, the loader runs out before the epoch length (the number of cases); the epoch ends there, and
    the engine's data are replaced by an empty list, where Ignite would otherwise start the loader again
    (segmenting cases twice, or its workers reading the first cases, and recording their failures, a second time).
    """

    def __init__(self, output_dir: str, cases: int) -> None:
        self.output_dir = Path(output_dir)
        self.cases = cases
        self.failed: dict[str, str] = {}

    @property
    def path(self) -> Path:
        return self.output_dir / FAILURES_CSV

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.clear)
        engine.add_event_handler(Events.DATALOADER_STOP_ITERATION, self.stop_reading)
        engine.add_event_handler(Events.COMPLETED, self.report)

    def clear(self, _: Engine) -> None:
        self.failed = {}
        if is_main_process():
            for record in (self.output_dir / FAILURES_DIR).glob("*.txt"):
                record.unlink()
            self.path.unlink(missing_ok=True)
        barrier()  # no rank records a failure before the old ones are gone

    @staticmethod
    def stop_reading(engine: Engine) -> None:
        """End the epoch where the loader ran out, and give the engine nothing more to read (see the class)."""
        engine.terminate_epoch()
        engine.set_data([])

    def report(self, _: Engine) -> None:
        barrier()  # every rank's failures are recorded
        self.failed = {
            r.stem: r.read_text(encoding="utf-8") for r in sorted((self.output_dir / FAILURES_DIR).glob("*.txt"))
        }
        if not self.failed or not is_main_process():
            return
        write_csv_atomically(self.path, [{"id": case_id, "reason": reason} for case_id, reason in self.failed.items()])
        if self.cases > 1:  # one case: its reason is the run's last word (raise_if_failed)
            for case_id, reason in self.failed.items():
                logger.error("%s not segmented: %s", case_id, reason)

    def raise_if_failed(self) -> None:
        """End the command with an error when any case failed (see the class)."""
        if not self.failed:
            return
        if self.cases == 1:
            raise InputError(next(iter(self.failed.values())))
        raise InputError(
            f"{self.cases - len(self.failed)} of {self.cases} scans segmented, {len(self.failed)} not: the reason "
            f"for each is above and in {self.path}. Mend those scans and run the same command again; it segments "
            "only the scans not done yet."
        )
