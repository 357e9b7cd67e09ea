"""Background jobs for admins: start a long maintenance run (a relabel), follow it, cancel it (memory.jobs)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from memory import jobs
from memory import sources as sources_svc
from memory.api import presenters, schemas
from memory.api.deps import ContainerDep, SessionDep, TransactionPerHop, WhoDep, job_runner, role
from memory.bootstrap import Container
from memory.errors import NotFoundError
from memory.models import Job
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1/admin", tags=["operations"], responses=schemas.ERRORS, route_class=TransactionPerHop)
# A job's requester follows it without the admin role (a steward's new floor relabels in the background).
requester_router = APIRouter(prefix="/v1", tags=["operations"], responses=schemas.ERRORS,
                             route_class=TransactionPerHop)
AdminDep = Annotated[EffectivePrincipal, role("admin")]


@router.post("/jobs", status_code=202, response_model=schemas.JobOut)
def start_job(
    body: schemas.JobIn, request: Request, response: Response, session: SessionDep, container: ContainerDep,
    who: AdminDep,
) -> schemas.JobOut:
    """Start a job in the background and answer at once (202, `Location` of the job): `relabel` does what
    `POST /v1/admin/relabel` does (same parameters, same audit records, same result), for runs longer than a
    proxy keeps a request open. Follow it with `GET /v1/admin/jobs/{id}`: its progress after every batch, then
    its result or error. One queued or running job per kind and scope (every source, or the one named, a
    steward's new floor in the background included): 409 `job_running` (with the job's id). 404 for an
    unknown source; 503 `service_stopping` while the process shuts down. Audited (`job.start`, `job.finish`).
    A relabel started otherwise (`POST /v1/admin/relabel`, `memory relabel`, a source's new floor with
    `relabel=wait`) takes no slot: runs side by side are safe (memory.relabel), only wasteful."""
    if body.source_id is not None:
        sources_svc.get(session, source_id=body.source_id)  # source_not_found now, not as the job's error
    job = queue_relabel(session, request, who, source_id=body.source_id, dry_run=body.dry_run)
    out = presenters.job(job)
    session.commit()  # queued for every replica to see before its thread starts
    start_relabel(request, container, who, job)
    response.headers["Location"] = f"/v1/admin/jobs/{job.id}"
    return out


def queue_relabel(session: Session, request: Request, who: EffectivePrincipal, *, source_id: str | None,
                  dry_run: bool = False) -> Job:
    """A relabel job of one source or all, queued in the caller's transaction (start it with `start_relabel` once
    committed). 503 `service_stopping` first (never a 202 for a job interrupted before it runs); 409 `job_running`
    while one of its scope is queued or running, named only to a caller who may follow it."""
    runner = job_runner(request)
    runner.ensure_accepting()
    return jobs.create(session, jobs.Requested(
        kind="relabel", params={"source_id": source_id, "dry_run": dry_run}, requested_by=who.principal_id,
        acting_for=who.acting_for, scope=jobs.source_scope(source_id)), stale_after_s=runner.stale_after_s,
        asked_by=who)


def start_relabel(request: Request, container: Container, who: EffectivePrincipal, job: Job) -> None:
    """Run a relabel job `queue_relabel` queued, once its transaction committed."""
    job_runner(request).start(job.id, container.relabel_work(
        actor=who.principal_id, acting_for=who.acting_for, source_id=job.params["source_id"],
        dry_run=bool(job.params["dry_run"])))


@router.get("/jobs", response_model=list[schemas.JobOut])
def list_jobs(
    request: Request, session: SessionDep, who: AdminDep,
    kind: Annotated[Literal["relabel"] | None, Query()] = None,
    status: Annotated[Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"] | None,
                      Query()] = None,
    limit: Annotated[int, Query(ge=1, le=jobs.MAX_LIST)] = 50,
) -> list[schemas.JobOut]:
    """The newest jobs first (a job whose process stopped is shown interrupted)."""
    return [presenters.job(j) for j in jobs.recent(session, stale_after_s=job_runner(request).stale_after_s, kind=kind,
                                                  status=status, limit=limit)]


@router.get("/jobs/{job_id}", response_model=schemas.JobOut)
def get_job(job_id: str, request: Request, session: SessionDep, who: AdminDep) -> schemas.JobOut:
    """One job: status, progress, result or error; 404 `job_not_found`."""
    return presenters.job(jobs.get(session, job_id, stale_after_s=job_runner(request).stale_after_s))


@router.post("/jobs/{job_id}/cancel", status_code=202, response_model=schemas.JobOut)
def cancel_job(job_id: str, request: Request, session: SessionDep, who: AdminDep) -> schemas.JobOut:
    """Ask a running job to stop after its current batch (every batch it finished stays whole; a relabel can be
    started again to finish); a queued one is cancelled at once. 409 `job_finished` if it already ended. Audited
    (`job.cancel`, and `job.finish` when it ends)."""
    job = jobs.request_cancel(session, job_id, actor=who.principal_id, acting_for=who.acting_for,
                              stale_after_s=job_runner(request).stale_after_s)
    return presenters.job(job)


@requester_router.get("/jobs/{job_id}", response_model=schemas.JobOut)
def get_own_job(job_id: str, request: Request, session: SessionDep, who: WhoDep) -> schemas.JobOut:
    """A job done for the user this caller is or acts for (started by that user, or by an agent acting for them;
    admins: any), such as the relabel a source's new floor started: status, progress, result or error. 404
    `job_not_found` for another's job, as for an unknown id."""
    _own(session, job_id, who)
    return presenters.job(jobs.get(session, job_id, stale_after_s=job_runner(request).stale_after_s))


@requester_router.post("/jobs/{job_id}/cancel", status_code=202, response_model=schemas.JobOut)
def cancel_own_job(job_id: str, request: Request, session: SessionDep, who: WhoDep) -> schemas.JobOut:
    """Stop a job done for the user this caller is or acts for (admins: any), as `POST /v1/admin/jobs/{id}/cancel`
    does: after its current batch (a queued one at once; every batch it finished stays whole, and the floor it
    relabels for holds whatever it reached). 409 `job_finished` if it already ended; 404 `job_not_found` for
    another's job. Audited (`job.cancel`, and `job.finish` when it ends)."""
    _own(session, job_id, who)
    return presenters.job(jobs.request_cancel(session, job_id, actor=who.principal_id, acting_for=who.acting_for,
                                              stale_after_s=job_runner(request).stale_after_s))


def _own(session: Session, job_id: str, who: EffectivePrincipal) -> None:
    """404 `job_not_found` unless `who` may see the job. Read before anything is marked or locked (`jobs.get` marks
    lost jobs interrupted): another's job is unknown, and costs its caller nothing more."""
    job = session.get(Job, job_id)
    if job is None or not jobs.visible_to(job, who):
        raise NotFoundError(f"job {job_id!r} not found", code="job_not_found")
