"""The runner's durable job table in SQLite: submit, claim per device in FIFO order, finish, recover."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.hashing import stable_hash
from runner.api import JobRequest, JobResult, JobView

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,  -- order of (re)queueing: FIFO per device
    device      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    request     TEXT NOT NULL,
    result      TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    interrupted INTEGER NOT NULL DEFAULT 0  -- attempts cut short by a runner stop, since last submitted
);
CREATE INDEX IF NOT EXISTS jobs_device_state ON jobs (device, state, seq);
"""


_COLUMNS = ("id, seq, device, state, request, result, error, attempts, created_at, started_at, finished_at, "
            "interrupted")


def job_id(request: JobRequest) -> str:
    """The job's id is a hash of the request's identity, which makes submission idempotent."""
    return "job-" + stable_hash(request.identity(), length=24)


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=timezone.utc) if value is not None else None


class JobStore:
    """All job state. One connection guarded by a lock: the runner's traffic is tiny."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        # WAL keeps readers (GET /v1/jobs) from waiting on a worker's write; FULL sync so a
        # finished result is on disk before the worker moves on.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
        if "interrupted" not in columns:  # a database from before the attempt cap
            self._db.execute("ALTER TABLE jobs ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row_to_view(self, row: sqlite3.Row | tuple) -> JobView:
        (jid, _seq, _device, state, request, result, error, attempts, created, started, finished, interrupted) = row
        return JobView(
            id=jid, state=state, request=JobRequest.model_validate_json(request), attempts=attempts,
            interrupted=interrupted,
            created_at=_dt(created), started_at=_dt(started), finished_at=_dt(finished),
            result=JobResult.model_validate_json(result) if result else None, error=error,
        )

    def get(self, jid: str) -> JobView | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (jid,)).fetchone()
        return self._row_to_view(row) if row else None

    def submit(self, request: JobRequest) -> tuple[JobView, bool]:
        """Insert the job unless it exists. A failed job submitted again is queued again.

        Returns (job, created_or_requeued).
        """
        jid = job_id(request)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT state FROM jobs WHERE id = ?", (jid,)).fetchone()
                changed = True
                if row is None:
                    self._db.execute(
                        "INSERT INTO jobs (id, seq, device, state, request, created_at) "
                        "VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?, 'queued', ?, ?)",
                        (jid, request.device, request.model_dump_json(), now),
                    )
                elif row[0] == "failed":
                    # A retry of a failed job: the client's bounded retries land here. The new
                    # request may carry a fresh presigned URL, so it replaces the old one.
                    self._db.execute(
                        "UPDATE jobs SET state = 'queued', request = ?, error = NULL, result = NULL, interrupted = 0, "
                        "started_at = NULL, finished_at = NULL, seq = (SELECT MAX(seq) + 1 FROM jobs) "
                        "WHERE id = ?",
                        (request.model_dump_json(), jid),
                    )
                else:
                    changed = False
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (jid,)).fetchone()
        return self._row_to_view(row), changed

    def claim_next(self, device: str) -> JobView | None:
        """Mark the oldest queued job of `device` running and return it (None if there is none)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT id FROM jobs WHERE device = ? AND state = 'queued' ORDER BY seq LIMIT 1", (device,)
                ).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return None
                self._db.execute(
                    "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?",
                    (time.time(), row[0]),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            full = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (row[0],)).fetchone()
        return self._row_to_view(full)

    def finish(self, jid: str, *, result: JobResult | None = None, error: str | None = None) -> None:
        state = "succeeded" if error is None else "failed"
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, finished_at = ? WHERE id = ?",
                (state, result.model_dump_json() if result else None, error, time.time(), jid),
            )

    def requeue_running(self, max_attempts: int) -> tuple[list[str], dict[str, str]]:
        """At start: jobs a previous process was running did not finish; queue them again, in order.

        A job whose runs were cut short max_attempts times fails instead: a model that kills
        the runner (or the phone's app) every time would otherwise hold its device forever.
        Returns (requeued ids, {failed id: reason}).
        """
        requeued: list[str] = []
        failed: dict[str, str] = {}
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT id, interrupted FROM jobs WHERE state = 'running' ORDER BY seq").fetchall()
                for jid, interrupted in rows:
                    interrupted += 1
                    if interrupted >= max_attempts:
                        reason = (f"the runner stopped while running this job, {interrupted} time(s) in a row "
                                  f"(the cap is {max_attempts} attempts, --max-attempts); it is not started again. "
                                  f"Look in the runner's log for what happened after its job_started lines; "
                                  f"submitting the same request again queues it again")
                        self._db.execute(
                            "UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, interrupted = ? "
                            "WHERE id = ?", (reason, now, interrupted, jid))
                        failed[jid] = reason
                    else:
                        self._db.execute(
                            "UPDATE jobs SET state = 'queued', started_at = NULL, interrupted = ? WHERE id = ?",
                            (interrupted, jid))
                        requeued.append(jid)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return requeued, failed

    def has_queued(self, device: str) -> bool:
        with self._lock:
            return self._db.execute(
                "SELECT 1 FROM jobs WHERE device = ? AND state = 'queued' LIMIT 1", (device,)).fetchone() is not None

    def devices_with_queued(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT device FROM jobs WHERE state = 'queued' ORDER BY device")]

    def counts(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        out = {s: 0 for s in ("queued", "running", "succeeded", "failed")}
        out.update({s: n for s, n in rows})
        return out

    def busy_devices(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT device FROM jobs WHERE state = 'running'")}


def dump(view: JobView) -> dict[str, Any]:
    return json.loads(view.model_dump_json())
