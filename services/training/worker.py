"""The trainer entry point a job runs in its own process (or Kubernetes pod).

    python -m services.training.worker --job-dir DIR

It reads `job.json`, appends events to `events.jsonl`, writes `result.json` and the
artifact, and exits 0 (done), 1 (failed: the last event says why) or 3 (stopped).
SIGTERM stops it between steps: a cancel (a `cancel` file exists) stops at once, a
shutdown saves a checkpoint first so the next attempt can resume. The worker outlives
a crashed service (the next replica reattaches to it), writes only while its attempt
holds the job's lease, and records its exit code in `exit.json` (fencing.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from services.training.datasets import mix, read_rows, split_rows
from services.training.fencing import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    Lease,
    lock_folder,
    write_exit,
)
from services.training.grounded_rows import expand, is_grounded_record
from services.training.spec import JobSpec

log = logging.getLogger(__name__)

OOM_REASON = (
    "the job ran out of memory: lower batch_size or max_seq_length, or use an adapter method"
)


class EventWriter:
    """Appends one JSON object per line; the service tails the file into the event log.

    Each line carries the worker's attempt, and nothing is written once the lease has
    moved on to a newer attempt (see fencing.py).
    """

    def __init__(self, path: Path, lease: Lease) -> None:
        self.handle = path.open("a", encoding="utf-8")
        self.lease = lease

    def __call__(self, kind: str, **payload: Any) -> None:
        if not self.lease.held():
            log.warning("lease lost to a newer attempt: event %r not written", kind)
            return
        line = {"kind": kind, "time": time.time(), "attempt": self.lease.attempt, **payload}
        self.handle.write(json.dumps(line) + "\n")
        self.handle.flush()

    def close(self) -> None:
        os.fsync(self.handle.fileno())
        self.handle.close()


def folder_sha256(folder: Path) -> str:
    """Content hash of a model folder: names and bytes of every file, in order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def resolve(root: Path, path: str) -> Path:
    """job.json paths are relative to the data root so a pod can mount it elsewhere."""
    return Path(path) if Path(path).is_absolute() else root / path


def load_splits(job: dict[str, Any], spec: JobSpec, root: Path) -> Any:
    """Reads the datasets, holds out validation/test by ratio when not given, mixes train."""
    from services.training.trainer import Splits

    seed = spec.hyperparameters.seed
    val_ratio = 0.0 if spec.validation_dataset_id else spec.validation_ratio
    test_ratio = 0.0 if spec.test_dataset_id else spec.test_ratio
    parts, validation, test = [], [], []
    for item in spec.train:
        rows = read_rows(resolve(root, job["datasets"][item.dataset_id]))
        train, val, tst = split_rows(rows, val_ratio, test_ratio, seed)
        parts.append((_grounded(train, seed, rows), item.weight))
        validation += _grounded(val, seed, rows)
        test += _grounded(tst, seed, rows)
    if spec.validation_dataset_id:
        rows = read_rows(resolve(root, job["datasets"][spec.validation_dataset_id]))
        validation = _grounded(rows, seed, rows)
    if spec.test_dataset_id:
        rows = read_rows(resolve(root, job["datasets"][spec.test_dataset_id]))
        test = _grounded(rows, seed, rows)
    return Splits(mix(parts, seed), validation, test)


def _grounded(rows: list[dict], seed: int, pool: list[dict]) -> list[dict]:
    """`grounded_qa` records become RAFT-style chat rows, after the split (no paraphrase of a
    held-out question is trained on); other formats pass through."""
    if not rows or not is_grounded_record(rows[0]):
        return rows
    return expand(rows, seed, pool)


class StopFlag:
    """Set by SIGTERM; says whether it is a cancel or a shutdown.

    A lost lease ("fenced") stops the worker without a checkpoint: the folder belongs
    to a newer attempt now.
    """

    def __init__(self, job_dir: Path, lease: Lease) -> None:
        self.job_dir = job_dir
        self.lease = lease
        self.signalled = False
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def __call__(self) -> str:
        if (self.job_dir / "cancel").exists():
            return "cancel"
        if not self.lease.held():
            return "fenced"
        if self.signalled:
            return "shutdown"
        return ""


def run_job(job_dir: Path, data_root: Path) -> int:
    """Runs the job in `job_dir`; returns the exit code (also recorded in `exit.json`)."""
    job = json.loads((job_dir / "job.json").read_text())
    spec = JobSpec.from_dict(job["spec"])
    lease = Lease(job_dir, job.get("attempt"))
    code = _run(job_dir, data_root, job, spec, lease)
    if lease.held():  # a fenced attempt's ending is nobody's business any more
        write_exit(job_dir, lease.attempt, code)
    return code


def _run(job_dir: Path, data_root: Path, job: dict[str, Any], spec: JobSpec, lease: Lease) -> int:
    from services.training.trainer import StopTraining, Trainer, TrainingError

    stop = StopFlag(job_dir, lease)
    folder_lock = lock_folder(job_dir, stop)
    if folder_lock is None:
        log.info("stopped while waiting for the previous worker: %s", stop())
        return EXIT_STOPPED
    emit = EventWriter(job_dir / "events.jsonl", lease)
    try:
        splits = load_splits(job, spec, data_root)
        base_dir = resolve(data_root, job["base_model_dir"])
        trainer = Trainer(spec, base_dir, job_dir, emit, stop)
        result = trainer.run(splits)
        result["base_model_sha256"] = folder_sha256(base_dir)
        if not lease.held():
            raise StopTraining("fenced")
        (job_dir / "result.json").write_text(json.dumps(result))
        return EXIT_OK
    except StopTraining as stopped:
        log.info("job stopped: %s", stopped)
        return EXIT_STOPPED
    except TrainingError as exc:
        emit("error", reason=str(exc))
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
            emit("error", reason=OOM_REASON)
        else:
            log.exception("trainer crashed")
            emit("error", reason=f"the trainer crashed ({type(exc).__name__}); see the job log")
    except Exception as exc:
        log.exception("trainer crashed")
        emit("error", reason=f"the trainer crashed ({type(exc).__name__}); see the job log")
    finally:
        emit.close()
        folder_lock.close()
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one training job from its folder.")
    parser.add_argument("--job-dir", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return run_job(args.job_dir, args.data_root)


if __name__ == "__main__":
    sys.exit(main())
