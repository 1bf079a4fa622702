"""Batch QA jobs: read and parse an upload, submit it, follow it, cancel it, read its results.

`submit` stores the job (with the input lines the parser refused, for the user to read) and enqueues it when
it has items, or marks it failed when that raises. A job without a valid item is stored as failed and never
enqueued, so the UI can still list its errors; a caller that would rather store nothing checks
`parsed.items` first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flows.queueing import EngineSource, enqueue_or_fail
from flows.uploads import BatchFileError, BatchLimits, ParsedBatch, parse_batch_file
from settings import get_settings
from storage import batch_jobs, quotas
from storage.batch_jobs import JobProgress
from storage.db import read_transaction, transaction
from storage.limits import Limits
from storage.models import QAJob
from workers import client

FILENAME_CHARS = 255
ENDED = frozenset({"done", "cancelled", "failed"})


@dataclass(frozen=True)
class SubmittedJob:
    job_id: str
    format: str
    items: int
    errors: list[dict[str, Any]] = field(default_factory=list)  # the refused input lines: {"line", "reason"}
    worker_online: bool = True  # False: no worker consumes the batch queue yet, the job waits for one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def limits() -> BatchLimits:
    return BatchLimits.from_settings(get_settings())


def read_upload(path: str | Path) -> bytes:
    """The file's bytes; BatchFileError if it is over the upload limit (checked before reading it), OSError if
    it cannot be read."""
    path = Path(path)
    size = path.stat().st_size
    if size > limits().max_bytes:
        raise BatchFileError(f"{path.name} is too large: {size} bytes > limit {limits().max_bytes}")
    return path.read_bytes()


def parse_upload(data: bytes, filename: str) -> ParsedBatch:
    """Items and refused lines of an uploaded JSONL, CSV or SQuAD JSON file, within the configured limits;
    BatchFileError if the file as a whole cannot be used."""
    return parse_batch_file(data, filename, limits=limits())


def submit(engine: EngineSource, owner: str, parsed: ParsedBatch, filename: str) -> SubmittedJob:
    """Store the parsed job and enqueue it (after checking Redis answers, when there is anything to run)."""
    if parsed.items:
        client.require_broker()
    with transaction(engine()) as db:
        quotas.check_quota(
            db, owner=owner, quota=quotas.Quota.from_settings(get_settings()), items=len(parsed.items)
        )
        job_id = batch_jobs.create_job(
            db,
            owner=owner,
            filename=filename[:FILENAME_CHARS],
            items=parsed.items,
            errors=parsed.errors,
            limits=Limits.from_settings(get_settings()),
        )
    if parsed.items:
        enqueue_or_fail(
            engine,
            lambda: client.enqueue_job(job_id),
            lambda db, error: batch_jobs.fail_job(db, job_id=job_id, error=error),
        )
    online = any(client.BATCH_QUEUE in worker.get("queues", []) for worker in client.list_workers())
    return SubmittedJob(
        job_id=job_id,
        format=parsed.format,
        items=len(parsed.items),
        errors=parsed.errors,
        worker_online=online,
    )


def status(engine: EngineSource, owner: str, job_id: str) -> dict[str, Any]:
    """Progress of one job (JobProgress.to_dict(): state, counts, fraction, eta_s), its filename, error,
    bad_records (input lines refused) and errors: [{"where": "line N" | "item ID", "reason"}]."""
    with read_transaction(engine()) as db:
        progress = batch_jobs.job_progress(db, job_id=job_id, owner=owner)
        job = batch_jobs.get_job(db, job_id=job_id, owner=owner)
        return _report(job, progress, batch_jobs.failed_items(db, job_id=job_id, owner=owner))


def list_jobs(engine: EngineSource, owner: str) -> list[dict[str, Any]]:
    """The owner's recent jobs, newest first, each as `status` reports it (read with three queries in all:
    the jobs, their item counts, their failed items)."""
    with read_transaction(engine()) as db:
        listed = batch_jobs.jobs_with_progress(db, owner=owner)
        failed = batch_jobs.failed_items_by_job(db, owner=owner, job_ids=[job.id for job, _ in listed])
        return [_report(job, progress, failed.get(job.id, [])) for job, progress in listed]


def _report(job: QAJob, progress: JobProgress, failed: list[dict[str, str | None]]) -> dict[str, Any]:
    errors = [{"where": f"line {e['line']}", "reason": e["reason"]} for e in job.parse_errors]
    errors += [{"where": f"item {item['id']}", "reason": item["error"]} for item in failed]
    return {
        **progress.to_dict(),
        "filename": job.filename,
        "error": job.error,
        "bad_records": len(job.parse_errors),
        "errors": errors,
    }


def cancel(engine: EngineSource, owner: str, job_id: str) -> bool:
    """Cancel a queued or running job (answered items keep their answers); False if it had already ended.

    Checks Redis answers first, so a job is not cancelled in the database while its queued chunks cannot be
    revoked."""
    client.require_broker()
    with transaction(engine()) as db:
        cancelled = batch_jobs.cancel_job(db, job_id=job_id, owner=owner)
    if cancelled:
        client.cancel_job(job_id)
    return cancelled


def results(engine: EngineSource, owner: str, job_id: str) -> list[dict[str, Any]]:
    """One row per item: {"id", "question", "answer", "score", "status", "error"} (storage.batch_jobs.export_results)."""
    with read_transaction(engine()) as db:
        return batch_jobs.export_results(db, job_id=job_id, owner=owner)
