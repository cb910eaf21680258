"""Background jobs (index rebuilds, training) with their records in SQLite.

One worker thread runs jobs in submission order, so a rebuild and a training
never compete for the CPU or race to swap the served version. Records survive
restarts. A job the server's shutdown stopped, or that a stopped process left `running` or
`queued` (a kill, a crash), is `interrupted`, with when and why, and named in the log of the stop
or of the next start; it is never run again on its own (a rebuild read a corpus that may have
changed since, and an activation made meanwhile must not be overwritten): submit it again. Several
replicas may share one database (WHITEVEC_JOBS_DB): each record names the replica that runs it, and
a replica that starts interrupts only its own unfinished jobs and cancels only its own (its data dir is locked by then,
so no other process is that replica). A queued job that is cancelled is
`cancelled` at once and never runs.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .clock import iso
from .database import Database, JobsUnavailable, check_sqlite, quarantine_damaged
from .serving import release_freed_memory

log = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL = ("succeeded", "failed", "cancelled", "interrupted")


class JobCancelled(Exception):
    """Raised inside a job when its cancel was asked for."""


class UnknownJob(KeyError):
    pass


class JobNotCancellable(ValueError):
    pass


class JobContext:
    """What a running job sees: progress reporting, live detail and its cancel flag."""

    def __init__(self, runner: "JobRunner", job_id: str) -> None:
        self.runner = runner
        self.id = job_id
        self.cancel_event = threading.Event()
        self.interrupted_by: str | None = None  # why the server stopped it (a shutdown), not a cancel
        self._last_write = 0.0

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(self.interrupted_by or "cancelled on request")

    def note(self, **detail: Any) -> None:
        """Add live figures (an eval score, say) to the job's detail without moving its progress."""
        record = self.runner._live[self.id]
        self.progress(record["done"], record["total"], **detail)

    def checkpoint(self, **detail: Any) -> None:
        """Record detail durably before a step a restart must be able to see (a version about to be
        activated): written now, retried like a state change, not best effort."""
        record = self.runner._live[self.id]
        record["detail"].update(detail)
        self.runner._record(self.id, detail=json.dumps(record["detail"]))

    def progress(self, done: int, total: int, **detail: Any) -> None:
        """Record progress; written through to SQLite at most twice a second (always at the end)."""
        record = self.runner._live[self.id]
        record["done"], record["total"] = int(done), int(total)
        if detail:
            record["detail"].update(detail)
        now = time.monotonic()
        if now - self._last_write >= 0.5 or done >= total:
            self._last_write = now
            try:  # best effort: this replica serves the live figures, and the final write retries
                self.runner._write(self.id, done=int(done), total=int(total), detail=json.dumps(record["detail"]))
            except JobsUnavailable as exc:
                log.warning("job %s: progress not recorded: %s", self.id, exc)


JobFn = Callable[[JobContext], dict]


COLUMNS = ("id, kind, state, done, total, created_at, started_at, finished_at, error, result, detail, owner, "
           "collection")
class JobsDB(Database):
    """Where job records live (table `jobs`), created or brought up to date on connect."""

    def __init__(self, target: str | Path) -> None:
        super().__init__(target)
        real = self.real
        with self.transaction() as execute:
            execute(f"""CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL,
                done INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,
                created_at {real} NOT NULL, started_at {real}, finished_at {real},
                error TEXT, result TEXT, detail TEXT NOT NULL DEFAULT '{{}}', owner TEXT, collection TEXT)""")
            if self.postgres:
                columns = {r[0] for r in execute("SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = 'jobs'")}
            else:
                columns = {r[1] for r in execute("PRAGMA table_info(jobs)")}
            if "owner" not in columns:  # a database from before replicas
                execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
            if "collection" not in columns:  # from before collections: its jobs were the default's
                execute("ALTER TABLE jobs ADD COLUMN collection TEXT")


class JobRunner:
    def __init__(self, db: str | Path, owner: str = "local", quarantine: bool = True) -> None:
        """`quarantine`: a damaged SQLite file of records is moved aside (job history is not worth the
        service) and a new one started; without it (the file holds access keys too) a damaged one is refused."""
        self.owner = owner
        self.quarantined: Path | None = None
        if isinstance(db, Path) and quarantine:
            self.quarantined = quarantine_damaged(db)
            if self.quarantined is not None:
                log.warning("job records %s were damaged: moved to %s, starting with no job history", db,
                            self.quarantined.name)
        elif isinstance(db, Path):
            check_sqlite(db, "job records and access keys", "restore it from a backup (`whitevec backup`); moving "
                         "it away starts with no job history and no access keys")
        self._db = JobsDB(db)
        self._queue: queue.Queue[tuple[str, JobFn] | None] = queue.Queue()
        self._contexts: dict[str, JobContext] = {}
        self._live: dict[str, dict] = {}
        self._thread: threading.Thread | None = None
        self._transition = threading.Lock()
        self._running: str | None = None
        self._on_end: dict[str, Callable[[], None]] = {}
        self._collection: dict[str, str] = {}  # unfinished jobs here -> their collection

    @property
    def busy(self) -> bool:
        """A job runs in this process now (other replicas' records, a dead one's included, do not count)."""
        return self._running is not None

    def start(self, activated: Callable[[str], bool] = lambda version: False) -> list[dict]:
        """Settle what a stopped process left running or queued, then start the worker; the jobs found
        interrupted (logged). A job killed after it activated its version (`activated(version)` says so)
        succeeded: its state follows what is on disk; any other is interrupted. Call only while holding the
        data dir's lock."""
        with self._db.transaction() as execute:
            now, mine = time.time(), "(owner=? OR owner IS NULL)"
            for job_id, detail in execute(f"SELECT id, detail FROM jobs WHERE state='running' AND {mine}",
                                          (self.owner,)):
                built = json.loads(detail or "{}").get("built_version")
                if built and activated(built):
                    execute("UPDATE jobs SET state='succeeded', finished_at=?, result=? WHERE id=?",
                            (now, json.dumps({"version": built, "recovered": "the server stopped after this job "
                                              "activated its version; details were not recorded"}), job_id))
            left = [(job_id, kind, state) for job_id, kind, state in execute(
                f"SELECT id, kind, state FROM jobs WHERE state IN ('running', 'queued') AND {mine}", (self.owner,))]
            for job_id, kind, state in left:
                error = (f"interrupted: the server stopped (by {iso(now)}: killed or crashed) "
                         + ("while this job was running" if state == "running" else "before this job started")
                         + "; it is not run again on its own: submit it again")
                execute("UPDATE jobs SET state='interrupted', finished_at=?, error=? WHERE id=?", (now, error, job_id))
        for job_id, kind, _ in left:
            log.warning("job %s (%s) was interrupted by the server's last stop; submit it again", job_id, kind)
        self._thread = threading.Thread(target=self._work, name="whitevec-jobs", daemon=True)
        self._thread.start()
        return [{"id": job_id, "kind": kind} for job_id, kind, _ in left]

    def stop(self, timeout: float = 30.0, why: str = "the server was shut down") -> None:
        """Interrupt what runs or waits (recorded `interrupted`, with when and `why`; logged), then wait for
        the worker to finish."""
        said = f"interrupted: {why} at {iso(time.time())}; it is not run again on its own: submit it again"
        with self._transition:
            for job_id, ctx in list(self._contexts.items()):
                ctx.interrupted_by = said
                ctx.cancel_event.set()
                running = self._running == job_id
                log.warning("job %s %s: %s", job_id, "was running" if running else "had not started", said)
                if not running:  # still queued: final now, and it never runs
                    self._finish(job_id, "interrupted", error=said)
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _write(self, job_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._db.transaction() as execute:
            execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))

    @property
    def db(self) -> JobsDB:
        """The job records' database (access keys live there too)."""
        return self._db

    def submit(self, kind: str, fn: JobFn, total: int = 0, on_end: Callable[[], None] | None = None,
               collection: str = "default") -> str:
        """Queue `fn`; `on_end` runs once the job is final, however it ends (cancelled while queued too)."""
        job_id = uuid.uuid4().hex[:16]
        with self._db.transaction() as execute:
            execute("INSERT INTO jobs (id, kind, state, total, created_at, owner, collection) "
                    "VALUES (?, ?, 'queued', ?, ?, ?, ?)", (job_id, kind, total, time.time(), self.owner, collection))
        self._contexts[job_id] = JobContext(self, job_id)
        self._collection[job_id] = collection
        self._live[job_id] = {"done": 0, "total": total, "detail": {}}
        if on_end is not None:
            self._on_end[job_id] = on_end
        self._queue.put((job_id, fn))
        return job_id

    def _work(self) -> None:
        """The one worker: whatever a job or its record raises, the job ends failed and the queue goes on."""
        while (entry := self._queue.get()) is not None:
            try:
                self._run(*entry)
            except Exception:  # noqa: BLE001 - the worker outlives any one job
                log.exception("job %s: the worker could not run or record it; going on with the queue", entry[0])
                self._forget(entry[0])
            finally:
                self._running = None
                del entry  # the job's corpus and vectors go now, not when the next job arrives
                release_freed_memory()

    def _run(self, job_id: str, fn: JobFn) -> None:
        with self._transition:  # queued → running, or cancel got there first
            ctx = self._contexts.get(job_id)
            if ctx is None:  # cancelled while queued: already final
                return
            self._live[job_id]["detail"]["phase"] = "starting"  # until the job reports its own: never no phase
            if not self._record(job_id, state="running", started_at=time.time(),
                                detail=json.dumps(self._live[job_id]["detail"])):
                self._finish(job_id, "failed", error="its record could not be written when it started (see the "
                                                     "server log); submit it again")
                return
            self._running = job_id
        try:
            result = fn(ctx)
        except JobCancelled as exc:
            self._finish(job_id, "interrupted" if ctx.interrupted_by else "cancelled", error=str(exc))
        except Exception as exc:  # a job's failure is its record, never the server's
            log.exception("job %s failed", job_id)
            self._finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
        else:
            self._live[job_id]["detail"]["phase"] = "done"
            self._finish(job_id, "succeeded", result=result)

    def _record(self, job_id: str, **fields: Any) -> bool:
        """_write for the worker: retried while the database is unreachable or busy (about 30 s), then
        logged; False when it could not be written. The worker thread never dies of it."""
        for wait in (0.5, 1, 2, 4, 8, 16, None):
            try:
                self._write(job_id, **fields)
                return True
            except (JobsUnavailable, sqlite3.OperationalError) as exc:  # unreachable, locked, disk full
                problem: Exception = exc
            except Exception as exc:  # noqa: BLE001 - a record that cannot be written (unserialisable, damaged)
                log.error("job %s: could not record %s: %s", job_id, fields.get("state", "progress"), exc)
                return False
            if wait is None:
                log.error("job %s: could not record %s: %s", job_id, fields.get("state", "progress"), problem)
                return False
            time.sleep(wait)
        return False

    def _finish(self, job_id: str, state: str, error: str | None = None, result: dict | None = None) -> None:
        live = self._live.get(job_id, {})
        try:
            encoded = None if result is None else json.dumps(result)
        except (TypeError, ValueError) as exc:
            state, error, encoded = "failed", f"its result could not be recorded: {exc}", None
        recorded = self._record(job_id, state=state, finished_at=time.time(), error=error, result=encoded,
                                done=live.get("done", 0), total=live.get("total", 0),
                                detail=json.dumps(live.get("detail", {}), default=str))
        if not recorded and state != "failed":  # what did happen must not read as "running" for ever
            self._record(job_id, state="failed", finished_at=time.time(),
                         error=f"it ended {state}, but that could not be recorded (see the server log)")
        self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        """Drop a final job's live state and run its `on_end` (whose failure is logged, never raised)."""
        self._contexts.pop(job_id, None)
        self._live.pop(job_id, None)
        self._collection.pop(job_id, None)
        on_end = self._on_end.pop(job_id, None)
        if on_end is not None:
            try:
                on_end()
            except Exception:  # noqa: BLE001 - the queue goes on
                log.exception("job %s: its end hook failed", job_id)

    def _row_to_dict(self, row: tuple) -> dict:
        (job_id, kind, state, done, total, created, started, finished, error, result, detail, owner, collection) = row
        live = self._live.get(job_id)
        if live is not None and state == "running":
            done, total, detail_obj = live["done"], live["total"], dict(live["detail"])
        else:
            detail_obj = json.loads(detail or "{}")
        return {
            "id": job_id, "kind": kind, "state": state,
            "progress": {"done": done, "total": total, "phase": detail_obj.get("phase")},
            "created_at": iso(created), "started_at": iso(started), "finished_at": iso(finished),
            "error": error, "result": json.loads(result) if result else None, "detail": detail_obj,
            "replica": owner, "collection": collection or "default",
        }

    def get(self, job_id: str) -> dict:
        with self._db.transaction() as execute:
            rows = execute(f"SELECT {COLUMNS} FROM jobs WHERE id=?", (job_id,))
        if not rows:
            raise UnknownJob(job_id)
        return self._row_to_dict(rows[0])

    def list(self, limit: int = 100, collection: str | None = None) -> list[dict]:
        """The newest jobs, of one collection when given (jobs from before collections are `default`'s)."""
        with self._db.transaction() as execute:
            if collection is None:
                rows = execute(f"SELECT {COLUMNS} FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
            elif collection == "default":
                rows = execute(f"SELECT {COLUMNS} FROM jobs WHERE collection=? OR collection IS NULL "
                               "ORDER BY created_at DESC LIMIT ?", (collection, limit))
            else:
                rows = execute(f"SELECT {COLUMNS} FROM jobs WHERE collection=? ORDER BY created_at DESC LIMIT ?",
                               (collection, limit))
        return [self._row_to_dict(r) for r in rows]

    def cancel(self, job_id: str) -> dict:
        job = self.get(job_id)
        if job["state"] in FINAL:
            raise JobNotCancellable(f"job {job_id} already {job['state']}; nothing to cancel")
        if job["replica"] not in (self.owner, None):
            raise JobNotCancellable(f"job {job_id} runs on replica {job['replica']}; cancel it there")
        with self._transition:
            ctx = self._contexts.get(job_id)
            if ctx is not None:
                ctx.cancel_event.set()
                if self._running != job_id:  # still queued: final now, and it never runs
                    self._finish(job_id, "cancelled", error="cancelled before it started")
        return self.get(job_id)

    def cancel_collection(self, collection: str) -> list[str]:
        """Cancel this process's queued and running jobs of a collection (it is being deleted)."""
        cancelled = []
        for job_id, name in list(self._collection.items()):
            if name == collection:
                try:
                    self.cancel(job_id)
                    cancelled.append(job_id)
                except (JobNotCancellable, UnknownJob, JobsUnavailable):
                    continue
        return cancelled

    def counts(self) -> dict[str, int]:
        with self._db.transaction() as execute:
            found = dict(execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {s: found.get(s, 0) for s in STATES}
