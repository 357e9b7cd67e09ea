"""Long maintenance runs as background jobs (an admin's `POST /v1/admin/jobs`, a steward's new floor on a large
source): a relabel of a large memory takes minutes (~100 s when 30k of 100k chunks change), longer than many
proxies hold a request open.

A job's state lives in SQL (table `jobs`), so any API replica answers for it: queued, running (with progress and
a heartbeat after each batch), then succeeded (with its result), failed (with the error's stable code), cancelled
(an admin asked; any replica may ask, the runner reads it after each batch) or interrupted (its process stopped).
A partial unique index allows one queued or running job per kind and scope (every source, `*`, or one,
`source:<id>`) across every process: a second start is 409 `job_running`, naming the job that runs to a caller
who may see it.

The runner is a thread of the API process that accepted the job. A job whose heartbeat is older than
`stale_after_s` lost its runner (a crash, a kill) and is marked interrupted whenever jobs are listed, read or
started; on the embedded store, where one process owns the data, every job left active is marked interrupted as
the API starts. Interrupted, cancelled or failed relabels leave every batch they finished whole and the vectors at
least as strict as SQL (memory.relabel): start it again to finish.

Each start and each end is audited (`job.start`, `job.finish`); the work audits its own effects.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from memory import audit
from memory.clock import aware, utcnow
from memory.db import transaction
from memory.errors import ConflictError, NotFoundError, ServiceError, ServiceStoppingError, ValidationFailedError
from memory.models import ACTIVE_JOB_STATUSES, Job
from memory.policy import EffectivePrincipal

log = logging.getLogger(__name__)

KINDS = ("relabel",)
ACTIVE = ACTIVE_JOB_STATUSES
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
MAX_LIST = 200

# The work a job runs: given a progress callback (call it after each unit of work with a JSON-able dict; it raises
# `Stopped` when the job must stop there), return the job's JSON-able result.
Progress = Callable[[dict[str, Any]], None]
Work = Callable[[Progress], dict[str, Any]]


class Stopped(Exception):
    """Raised into the work by its progress callback: the job was cancelled, or its process is stopping."""

    def __init__(self, status: str, *, recorded: bool = False) -> None:
        super().__init__(status)
        self.status = status  # cancelled | interrupted
        self.recorded = recorded  # its row already says how it ended (taken for lost): leave it


def source_scope(source_id: str | None) -> str:
    """The scope of a job over one source (`source:<id>`), or over every source (`*`)."""
    return "*" if source_id is None else f"source:{source_id}"


@dataclass(frozen=True)
class Requested:
    kind: str
    params: dict[str, Any]
    requested_by: str
    acting_for: str | None = None
    scope: str = "*"  # what it works on (source_scope): one queued or running job per kind and scope


def visible_to(job: Job, who: EffectivePrincipal) -> bool:
    """Whether `who` may see `job`: an admin any; anyone else the jobs done for the user they are or act for (the
    job's `acting_for`, else who started it). So a user follows the jobs an agent started for them, and an agent
    acting for that user follows the user's; another user's job, or an agent's own, stays hidden."""
    return "admin" in who.roles or (job.acting_for or job.requested_by) == (who.acting_for or who.principal_id)


def create(session: Session, req: Requested, *, stale_after_s: float,
           asked_by: EffectivePrincipal | None = None) -> Job:
    """A queued job (in the caller's transaction, audited `job.start`); 409 `job_running` if one of its kind and
    scope is queued or running (after jobs whose runner stopped are marked interrupted), naming it (`job_id`)
    unless the caller who asked (`asked_by`) may not see it (`visible_to`)."""
    if req.kind not in KINDS:
        raise ValidationFailedError(f"kind must be one of {', '.join(KINDS)}", code="invalid_job_kind")
    mark_stale(session, stale_after_s=stale_after_s)
    active = session.scalar(select(Job).where(Job.kind == req.kind, Job.scope == req.scope,
                                              Job.status.in_(ACTIVE_JOB_STATUSES)))
    if active is not None:
        named = asked_by is None or visible_to(active, asked_by)
        raise ConflictError(f"a {req.kind} job is already queued or running"
                            + (" for this source" if req.scope != "*" else ""), code="job_running",
                            details={"job_id": active.id if named else None})
    job = Job(id=str(uuid.uuid4()), kind=req.kind, scope=req.scope, status="queued", params=dict(req.params),
              requested_by=req.requested_by, acting_for=req.acting_for, created_at=utcnow())
    session.add(job)
    try:
        session.flush()
    except IntegrityError as exc:  # PostgreSQL: another replica's start committed between the read and the insert
        raise ConflictError(f"a {req.kind} job is already queued or running", code="job_running",
                            details={"job_id": None}) from exc
    audit.append(session, audit.Write(action="job.start", target=job.id, details={"kind": job.kind,
                                                                                 "params": job.params}),
                 principal_id=req.requested_by, acting_for=req.acting_for)
    return job


def get(session: Session, job_id: str, *, stale_after_s: float) -> Job:
    mark_stale(session, stale_after_s=stale_after_s)
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found", code="job_not_found")
    return job


def recent(session: Session, *, stale_after_s: float, kind: str | None = None, status: str | None = None,
           limit: int = 50) -> list[Job]:
    """The newest jobs first."""
    if not 1 <= limit <= MAX_LIST:
        raise ValidationFailedError(f"limit must be within 1..{MAX_LIST}", code="invalid_limit")
    mark_stale(session, stale_after_s=stale_after_s)
    q = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if kind is not None:
        q = q.where(Job.kind == kind)
    if status is not None:
        q = q.where(Job.status == status)
    return list(session.scalars(q))


def request_cancel(session: Session, job_id: str, *, actor: str, acting_for: str | None, stale_after_s: float) -> Job:
    """Ask a queued or running job to stop after its current batch (audited `job.cancel`); 409 `job_finished` if
    it already ended. A queued one ends at once (`cancelled`), as does one whose runner is lost (`interrupted`,
    `runner_lost`)."""
    # Only this job's row is locked, then the audit head: the order a runner's `end` takes. (A sweep of every
    # stale job here, `mark_stale`, would lock other rows and the audit head first: a deadlock with that end.)
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found", code="job_not_found")
    if job.status in FINISHED:
        raise ConflictError(f"job {job_id!r} already ended ({job.status})", code="job_finished",
                            details={"status": job.status})
    job.cancel_requested = True
    audit.append(session, audit.Write(action="job.cancel", target=job.id, details={"kind": job.kind}),
                 principal_id=actor, acting_for=acting_for)
    if _lost(job, stale_after_s):
        end(session, job, "interrupted", error=("runner_lost", _lost_message(stale_after_s)))
    elif job.status == "queued":  # no runner has it yet: ended now
        end(session, job, "cancelled")
    return job


def _lost(job: Job, stale_after_s: float) -> bool:
    """The condition `mark_stale` applies, for one job."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    beat = job.heartbeat_at if job.heartbeat_at is not None else job.created_at
    return aware(beat) < cutoff


def _lost_message(stale_after_s: float) -> str:
    return f"no heartbeat for {stale_after_s:g} s: its process stopped; start it again"


def mark_stale(session: Session, *, stale_after_s: float) -> int:
    """Jobs whose runner stopped: queued or running with no heartbeat since `stale_after_s` ago (or never, and
    created that long ago) are marked interrupted (`runner_lost`), each audited. Returns how many."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    lost = (Job.heartbeat_at.is_not(None) & (Job.heartbeat_at < cutoff)) | (
        Job.heartbeat_at.is_(None) & (Job.created_at < cutoff))
    return _interrupt(session, lost, _lost_message(stale_after_s))


def interrupt_all(factory: sessionmaker[Session]) -> int:
    """Every queued or running job marked interrupted (`runner_lost`), each audited: the embedded store at API
    start, where no other process can be running one. Returns how many."""
    with transaction(factory) as session:
        return _interrupt(session, None, "the service stopped while it ran; start it again")


def _interrupt(session: Session, condition: Any, message: str) -> int:
    q = select(Job).where(Job.status.in_(ACTIVE_JOB_STATUSES)).order_by(Job.id).with_for_update()
    if condition is not None:
        q = q.where(condition)
    lost = list(session.scalars(q))
    for job in lost:
        end(session, job, "interrupted", error=("runner_lost", message))
    if lost:
        log.warning("jobs.interrupted runner_lost=%d", len(lost))
    return len(lost)


def end(session: Session, job: Job, status: str, *, result: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None) -> None:
    """A job's end (in the caller's transaction, its row locked), audited `job.finish`."""
    job.status, job.finished_at, job.result = status, utcnow(), result
    if status == "interrupted" and error is None:
        error = ("service_stopping", "the service stopped while it ran; start it again")
    job.error_code, job.error_message = error if error is not None else (None, None)
    audit.append(session, audit.Write(action="job.finish", target=job.id, details={
        "kind": job.kind, "status": status, "error_code": job.error_code}),
        principal_id=job.requested_by, acting_for=job.acting_for)
    log.info("jobs.finished job=%s status=%s", job.id, status)


class JobRunner:
    """Runs each job on its own daemon thread of this process, with a heartbeat of its own (every quarter of
    `stale_after_s`, whatever the work is doing: a long step without progress is not taken for a lost runner,
    unless a cancel has gone unheeded that long: `_beat`).
    `stop()` asks the jobs to stop after their current batch and waits for them (the service is stopping: they
    end interrupted); it says whether they all ended."""

    def __init__(self, factory: sessionmaker[Session], *, stale_after_s: float) -> None:
        self._factory = factory
        self._stale_after_s = stale_after_s
        self._stopping = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()  # start() against stop(): a job started is always waited for

    @property
    def stale_after_s(self) -> float:
        return self._stale_after_s

    def ensure_accepting(self) -> None:
        """503 `service_stopping` once `stop()` was called: a job would be interrupted before it ran."""
        if self._stopping.is_set():
            raise ServiceStoppingError("the service is stopping: start the job again on a running replica")

    def start(self, job_id: str, work: Work) -> None:
        """Run the queued job `job_id` (committed by the caller) on a new thread."""
        with self._lock:
            if not self._stopping.is_set():
                thread = threading.Thread(target=self._run, args=(job_id, work), name=f"memory-job-{job_id[:8]}",
                                          daemon=True)
                self._threads[job_id] = thread
                thread.start()
                return
        self._finish(job_id, "interrupted", error=("service_stopping", "the service stopped before it ran"))

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        """Wait for a job this runner started to end; True if it has (tests, the CLI)."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def stop(self, timeout: float = 120.0) -> bool:
        """Ask every job to stop after its current batch and wait up to `timeout` s in all; True if they ended."""
        with self._lock:
            self._stopping.set()
            threads = list(self._threads.values())
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("jobs.stop_timeout threads=%s: still running as the service stops", ",".join(alive))
        return not alive

    def _run(self, job_id: str, work: Work) -> None:
        done = threading.Event()
        try:
            if not self._begin(job_id):
                return
            threading.Thread(target=self._beat, args=(job_id, done), name=f"memory-beat-{job_id[:8]}",
                             daemon=True).start()
            result = work(lambda progress: self._progress(job_id, progress))
        except Stopped as exc:
            if not exc.recorded:
                self._finish(job_id, exc.status)
        except ServiceError as exc:
            self._finish(job_id, "failed", error=(exc.code, exc.message))
        except Exception as exc:  # never let a runner thread die silently; no message: it may carry data
            log.error("jobs.failed job=%s error=%s", job_id, type(exc).__name__)
            self._finish(job_id, "failed", error=("internal_error", type(exc).__name__))
        else:
            self._finish(job_id, "succeeded", result=result)
        finally:
            done.set()
            with self._lock:
                self._threads.pop(job_id, None)

    def _beat(self, job_id: str, done: threading.Event) -> None:
        """Beat every quarter of `stale_after_s` while the job's thread runs. A cancel its work has not heeded
        for `stale_after_s` (a step that hangs: a call that never returns) stops the beats, so the job is taken
        for lost (`mark_stale`: interrupted, `runner_lost`) and its kind can start again; should the hung step
        ever return, the work stops at its next batch (the job is no longer running)."""
        interval = max(0.05, self._stale_after_s / 4)
        cancel_seen: float | None = None
        while not done.wait(interval):
            try:
                with transaction(self._factory) as session:
                    cancelled = session.execute(
                        update(Job).where(Job.id == job_id, Job.status == "running")
                        .values(heartbeat_at=utcnow()).returning(Job.cancel_requested)
                    ).scalar_one_or_none()
            except Exception as exc:  # a busy database: the next beat, or the progress, beats instead
                log.warning("jobs.heartbeat_failed job=%s error=%s", job_id, type(exc).__name__)
                continue
            if cancelled and cancel_seen is None:
                cancel_seen = time.monotonic()
            if cancel_seen is not None and time.monotonic() - cancel_seen >= self._stale_after_s:
                log.error("jobs.cancel_unheeded job=%s after_s=%g: its step hangs; no more heartbeats, so it is "
                          "taken for lost", job_id, self._stale_after_s)
                return

    def _begin(self, job_id: str) -> bool:
        with transaction(self._factory) as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.status != "queued":
                return False
            if job.cancel_requested:
                end(session, job, "cancelled")
                return False
            now = utcnow()
            job.status, job.started_at, job.heartbeat_at = "running", now, now
        log.info("jobs.running job=%s", job_id)
        return True

    def _progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with transaction(self._factory) as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is not None and job.status != "running" and job.error_code == "runner_lost" \
                    and job.cancel_requested:
                # Taken for lost after a cancel its step was too slow to heed: this runner lives, so its true end,
                # the cancel, is recorded (`_finish` may overwrite a `runner_lost`).
                raise Stopped("cancelled")
            if job is None or job.status != "running":  # taken for lost meanwhile: stop as the row says
                raise Stopped("interrupted", recorded=True)
            job.progress, job.heartbeat_at = dict(progress), utcnow()
            cancelled = job.cancel_requested
        if cancelled:
            raise Stopped("cancelled")
        if self._stopping.is_set():
            raise Stopped("interrupted")

    def _finish(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
                error: tuple[str, str] | None = None) -> None:
        """The job's end, unless it already ended. One that was taken for lost (`runner_lost`: its heartbeat failed
        for too long) while this runner still ran it gets its true end, recorded and audited, all the same."""
        try:
            with transaction(self._factory) as session:
                job = session.get(Job, job_id, with_for_update=True)
                if job is None:
                    return
                if job.status in ACTIVE_JOB_STATUSES or job.error_code == "runner_lost":
                    end(session, job, status, result=result, error=error)
        except Exception as exc:  # the database is gone (the service stopping): the heartbeat rule marks it
            log.error("jobs.finish_failed job=%s error=%s", job_id, type(exc).__name__)
