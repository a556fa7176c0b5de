"""Embedded lane back end: SQLite (WAL) in the data dir, shared by the server and its workers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

from kombain.server.lane.jobs import Job, JobStatus, check_transition
from kombain.server.lane.queue import JobQueue, QueueConfig, QueueFull, result_name

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    worker TEXT NOT NULL DEFAULT '',
    cancel INTEGER NOT NULL DEFAULT 0,
    idem TEXT UNIQUE,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_next ON jobs (status, priority, created_at);
CREATE TABLE IF NOT EXISTS stats (id INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL);
"""


class SqliteQueue(JobQueue):
    """Jobs in `<data_dir>/lane/jobs.sqlite3`, files in `<data_dir>/lane/results/<job id>/`."""

    transient_errors = (sqlite3.OperationalError,)  # "database is locked" past the timeout

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self.root = config.data_dir / "lane"
        self.results = self.root / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self._pressure_path = self.root / "voice_pressure.json"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.root / "jobs.sqlite3", timeout=30, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the database lock from the start (no upgrade races)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _save(self, db: sqlite3.Connection, job: Job) -> None:
        db.execute(
            "UPDATE jobs SET status=?, finished_at=?, worker=?, doc=? WHERE id=?",
            (job.status.value, job.finished_at, job.worker, json.dumps(job.to_row()), job.id),
        )

    @staticmethod
    def _load(doc: str, cancel: int = 0) -> Job:
        job = Job.from_row(json.loads(doc))
        job.cancel_requested = bool(cancel)
        return job

    # --- API side -----------------------------------------------------------------------------
    def submit(self, job: Job, idempotency_key: str | None = None) -> Job:
        with self._tx() as db:
            if idempotency_key:
                row = db.execute("SELECT doc, cancel FROM jobs WHERE idem=?", (idempotency_key,)).fetchone()
                if row:
                    return self._load(*row)
            (queued,) = db.execute("SELECT COUNT(*) FROM jobs WHERE status='queued'").fetchone()
            if queued >= self.config.queue_limit:
                raise QueueFull(f"{queued} jobs queued, the limit is {self.config.queue_limit}")
            db.execute(
                "INSERT INTO jobs (id, priority, status, created_at, idem, doc) VALUES (?,?,?,?,?,?)",
                (job.id, job.priority, job.status.value, job.created_at, idempotency_key or None,
                 json.dumps(job.to_row())),
            )
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT doc, cancel FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._load(*row) if row else None

    def request_cancel(self, job_id: str) -> Job:
        with self._tx() as db:
            row = db.execute("SELECT doc FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            job = self._load(row[0])
            check_transition(job.status, JobStatus.CANCELLED)
            if job.status is JobStatus.QUEUED:
                job.status, job.finished_at = JobStatus.CANCELLED, time.time()
                self._save(db, job)
            db.execute("UPDATE jobs SET cancel=1 WHERE id=?", (job_id,))
            job.cancel_requested = True
        return job

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued','running') GROUP BY status"
            ).fetchall()
        return {"queued": 0, "running": 0} | dict(rows)

    def recover(self) -> int:
        return self._requeue("SELECT doc FROM jobs WHERE status='running'", ())

    def release_worker(self, worker: str) -> int:
        return self._requeue("SELECT doc FROM jobs WHERE status='running' AND worker=?", (worker,))

    def _requeue(self, query: str, args: tuple[Any, ...]) -> int:
        with self._tx() as db:
            jobs = [self._load(r[0]) for r in db.execute(query, args).fetchall()]
            for job in jobs:
                self._retry_locked(db, job, "worker stopped while running the job")
        return len(jobs)

    def purge(self, older_than: float) -> int:
        with self._tx() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (older_than,)
            ).fetchall()]
            db.executemany("DELETE FROM jobs WHERE id=?", [(i,) for i in ids])
        for i in ids:
            shutil.rmtree(self.results / i, ignore_errors=True)
        return len(ids)

    # --- worker side --------------------------------------------------------------------------
    def claim(self, worker: str) -> Job | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT doc FROM jobs WHERE status='queued' ORDER BY priority, created_at LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            job = self._load(row[0])
            check_transition(job.status, JobStatus.RUNNING)
            job.status, job.worker, job.started_at = JobStatus.RUNNING, worker, time.time()
            job.attempts += 1
            self._save(db, job)
        return job

    def progress(self, job: Job, step: int, steps: int) -> None:
        job.step, job.steps = step, steps
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id=?", (job.id,)).fetchone()
            if row and row[0] == JobStatus.RUNNING.value:
                self._save(db, job)

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT cancel FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row[0])

    def finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        with self._tx() as db:
            check_transition(job.status, status)
            # Change a copy, so a failed write can be retried with the job as it was.
            done = dataclasses.replace(job, status=status, error=error, finished_at=time.time())
            self._save(db, done)
        job.status, job.error, job.finished_at = status, error, done.finished_at

    def retry(self, job: Job, error: str) -> bool:
        with self._tx() as db:
            return self._retry_locked(db, job, error)

    def _retry_locked(self, db: sqlite3.Connection, job: Job, error: str) -> bool:
        if job.attempts >= self.config.max_attempts:
            job.status, job.finished_at = JobStatus.FAILED, time.time()
            job.error = f"gave up after {job.attempts} attempts: {error}"
            self._save(db, job)
            return False
        job.status, job.worker, job.step, job.error = JobStatus.QUEUED, "", 0, error
        self._save(db, job)
        return True

    def put_result(self, job: Job, index: int, data: bytes, ext: str) -> str:
        name = result_name(index, ext)
        folder = self.results / job.id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
        return name

    def get_result(self, job_id: str, name: str) -> bytes | None:
        path = self.results / job_id / name
        if "/" in name or "/" in job_id or not path.is_file():
            return None
        return path.read_bytes()

    # --- voice pressure and statistics ---------------------------------------------------------
    def publish_pressure(self, pressure: dict[str, Any]) -> None:
        # A whole-file replace, so a reader never sees half a write.
        tmp = self._pressure_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(pressure))
        os.replace(tmp, self._pressure_path)

    def read_pressure(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._pressure_path.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def push_stats(self, stats: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO stats (doc) VALUES (?)", (json.dumps(stats),))

    def drain_stats(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._tx() as db:
            rows = db.execute("SELECT id, doc FROM stats ORDER BY id LIMIT ?", (limit,)).fetchall()
            if rows:
                db.execute("DELETE FROM stats WHERE id <= ?", (rows[-1][0],))
        return [json.loads(d) for _, d in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
