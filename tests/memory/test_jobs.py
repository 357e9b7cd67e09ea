"""Background jobs (memory.jobs, /v1/admin/jobs): one active job per kind, progress and heartbeat, success,
failure with a stable code, cancellation from any process, interruption by a stop or a lost runner, the audit of
each start and end. The runner with stand-in work on the real SQL; a relabel job through the API (real SQL,
Qdrant Edge and parsing), and once through the whole real stack."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from memory import jobs
from memory.clock import utcnow
from memory.db import transaction
from memory.errors import ConflictError, NotFoundError, ValidationFailedError
from memory.models import AuditRecord, Job


def _create(c: Any, kind: str = "relabel", **params: Any) -> str:
    with transaction(c.sessions) as s:
        return jobs.create(s, jobs.Requested(kind=kind, params=params, requested_by="admin"), stale_after_s=600).id


def _job(c: Any, job_id: str) -> Job:
    with c.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


def _actions(c: Any) -> list[str]:
    with c.sessions() as s:
        return [r.body.get("action", "") for r in s.scalars(select(AuditRecord).order_by(AuditRecord.seq))]


def test_one_active_job_per_kind_and_a_finished_one_frees_the_slot(container):
    first = _create(container)
    with pytest.raises(ConflictError) as err:
        _create(container)
    assert (err.value.code, err.value.details) == ("job_running", {"job_id": first})
    with pytest.raises(ValidationFailedError) as bad:
        _create(container, kind="reindex")
    assert bad.value.code == "invalid_job_kind"
    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    runner.start(first, lambda progress: {"done": True})
    assert runner.wait(first, 10)
    assert _job(container, first).status == "succeeded"
    second = _create(container)
    assert second != first and _job(container, second).status == "queued"


def test_the_runner_records_progress_heartbeat_and_result(container):
    job_id = _create(container)
    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    seen: list[tuple[str, dict[str, Any] | None]] = []

    def work(progress: jobs.Progress) -> dict[str, Any]:
        for i in range(3):
            progress({"versions": i, "versions_total": 3})
            job = _job(container, job_id)
            seen.append((job.status, job.progress))
        return {"raised": 2}

    runner.start(job_id, work)
    assert runner.wait(job_id, 10)
    job = _job(container, job_id)
    assert [s for s, _ in seen] == ["running"] * 3 and seen[-1][1] == {"versions": 2, "versions_total": 3}
    assert (job.status, job.result, job.error_code) == ("succeeded", {"raised": 2}, None)
    assert job.started_at is not None and job.heartbeat_at is not None and job.finished_at is not None
    assert _actions(container)[-2:] == ["job.start", "job.finish"]


def test_a_service_error_fails_the_job_with_its_code_and_anything_else_as_internal(container):
    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    job_id = _create(container)

    def refused(progress: jobs.Progress) -> dict[str, Any]:
        raise ConflictError("the label map changed", code="label_map_changed")

    runner.start(job_id, refused)
    assert runner.wait(job_id, 10)
    job = _job(container, job_id)
    assert (job.status, job.error_code, job.error_message) == ("failed", "label_map_changed", "the label map changed")
    job_id = _create(container)

    def crashed(progress: jobs.Progress) -> dict[str, Any]:
        raise RuntimeError("a message that might hold data")

    runner.start(job_id, crashed)
    assert runner.wait(job_id, 10)
    job = _job(container, job_id)
    assert (job.status, job.error_code, job.error_message) == ("failed", "internal_error", "RuntimeError")


def _blocking(started: threading.Event, beats: list[int]) -> jobs.Work:
    def work(progress: jobs.Progress) -> dict[str, Any]:
        started.set()
        for i in range(2000):  # until told to stop (never ends on its own within the test)
            progress({"versions": i})
            beats.append(i)
            time.sleep(0.005)
        return {"finished": True}

    return work


def test_a_cancel_from_any_process_stops_the_job_after_its_batch(container):
    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    job_id = _create(container)
    started, beats = threading.Event(), []
    runner.start(job_id, _blocking(started, beats))
    assert started.wait(10)
    with transaction(container.sessions) as s:  # what another replica's cancel writes
        jobs.request_cancel(s, job_id, actor="admin", acting_for=None, stale_after_s=600)
    assert runner.wait(job_id, 10)
    job = _job(container, job_id)
    assert job.status == "cancelled" and job.cancel_requested and len(beats) < 2000
    with transaction(container.sessions) as s, pytest.raises(ConflictError) as err:
        jobs.request_cancel(s, job_id, actor="admin", acting_for=None, stale_after_s=600)
    assert err.value.code == "job_finished"
    assert {"job.start", "job.cancel", "job.finish"} <= set(_actions(container))


def test_a_job_cancelled_while_queued_never_runs(container):
    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    job_id = _create(container)
    with transaction(container.sessions) as s:
        jobs.request_cancel(s, job_id, actor="admin", acting_for=None, stale_after_s=600)
    ran = []
    runner.start(job_id, lambda progress: ran.append(1) or {})
    assert runner.wait(job_id, 10)
    assert _job(container, job_id).status == "cancelled" and ran == []


def test_stopping_the_runner_interrupts_its_jobs_and_refuses_new_ones(container):
    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    job_id = _create(container)
    started, beats = threading.Event(), []
    runner.start(job_id, _blocking(started, beats))
    assert started.wait(10)
    runner.stop(timeout=10)
    job = _job(container, job_id)
    assert (job.status, job.error_code) == ("interrupted", "service_stopping")
    late = _create(container)
    runner.start(late, lambda progress: {})
    assert _job(container, late).status == "interrupted"


def test_a_job_whose_runner_was_lost_is_marked_interrupted_and_frees_the_slot(container):
    job_id = _create(container)
    with transaction(container.sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            status="running", heartbeat_at=utcnow() - timedelta(seconds=700)))
    with transaction(container.sessions) as s:
        listed = jobs.recent(s, stale_after_s=600)
    assert [(j.id, j.status, j.error_code) for j in listed] == [(job_id, "interrupted", "runner_lost")]
    fresh = _create(container)  # the slot is free again
    with transaction(container.sessions) as s:
        s.execute(update(Job).where(Job.id == fresh).values(status="running", heartbeat_at=utcnow()))
    with transaction(container.sessions) as s:
        assert jobs.get(s, fresh, stale_after_s=600).status == "running"  # a live heartbeat is left alone
    assert jobs.interrupt_all(container.sessions) == 1  # the embedded API's start: nobody else runs one
    assert _job(container, fresh).status == "interrupted"


def test_a_runner_whose_job_was_marked_interrupted_stops_instead_of_overwriting_it(container):
    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    job_id = _create(container)
    started, beats = threading.Event(), []
    runner.start(job_id, _blocking(started, beats))
    assert started.wait(10)
    jobs.interrupt_all(container.sessions)  # another process decided it was lost
    assert runner.wait(job_id, 10)
    job = _job(container, job_id)
    assert (job.status, job.error_code, job.result) == ("interrupted", "runner_lost", None)


def test_an_unknown_job_is_404(container):
    with container.sessions() as s, pytest.raises(NotFoundError) as err:
        jobs.get(s, "nope", stale_after_s=600)
    assert err.value.code == "job_not_found"


# -- through the API -------------------------------------------------------------------------------------------

def _wait_done(api: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.client.get(f"/v1/admin/jobs/{job_id}", headers=api.admin)
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("queued", "running"):
            return dict(r.json())
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


EMAIL_NOTE = "Payroll note: write to alice.smith@example.com about the payroll bonus."


def test_an_admin_relabels_in_the_background_and_follows_the_job(api):
    """EMAIL_ADDRESS raised to restricted (the test classifier finds e-mail addresses): a relabel job withholds the
    stored note from a confidential reader; its progress, result and audit records are there to follow."""
    api.source("hr", read_groups=["g"])
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    assert api.upload("hr", "note.txt", EMAIL_NOTE).status_code == 201
    assert api.search(reader, "payroll bonus").json()["hits"]
    default = api.client.get("/v1/policy/labels", headers=api.admin).json()
    put = api.client.put("/v1/policy/labels", headers=api.admin,
                         json={"mapping": {**default["mapping"], "EMAIL_ADDRESS": "restricted"}})
    assert put.status_code == 200, put.text

    r = api.client.post("/v1/admin/jobs", headers=api.admin, json={"kind": "relabel", "source_id": "hr"})
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/admin/jobs/{r.json()['job_id']}"
    assert r.json()["status"] == "queued" and r.json()["params"] == {"source_id": "hr", "dry_run": False}
    job = _wait_done(api, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert (job["result"]["raised"], job["result"]["label_map_version"]) == (1, put.json()["label_map_version"])
    assert job["progress"]["versions"] == job["progress"]["versions_total"] == 1
    body = api.search(reader, "payroll bonus").json()
    assert body["hits"] == [] and body["policy"]["withheld"][0]["reason"] == "clearance"
    listed = api.client.get("/v1/admin/jobs", headers=api.admin, params={"kind": "relabel"}).json()
    assert [j["job_id"] for j in listed] == [job["job_id"]]
    actions = [x["body"]["action"] for x in
               api.client.get("/v1/audit", headers=api.admin, params={"event": "write"}).json()["records"]]
    assert actions[-3:] == ["job.start", "policy.relabel", "job.finish"]


def test_job_errors_are_stable_codes(api, monkeypatch):
    api.source("hr", read_groups=["g"])
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"])
    assert api.client.post("/v1/admin/jobs", headers=steward, json={"kind": "relabel"}).status_code == 403
    for body in ({"kind": "reindex"}, {"kind": "relabel", "dry": True}, {}):
        r = api.client.post("/v1/admin/jobs", headers=api.admin, json=body)
        assert r.status_code == 422, (body, r.text)
    r = api.client.post("/v1/admin/jobs", headers=api.admin, json={"kind": "relabel", "source_id": "nope"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "source_not_found")
    r = api.client.get("/v1/admin/jobs/nope", headers=api.admin)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "job_not_found")

    started, beats = threading.Event(), []
    monkeypatch.setattr(type(api.container), "relabel_work", lambda self, **kw: _blocking(started, beats))
    first = api.client.post("/v1/admin/jobs", headers=api.admin, json={"kind": "relabel"})
    assert first.status_code == 202 and started.wait(10)
    second = api.client.post("/v1/admin/jobs", headers=api.admin, json={"kind": "relabel", "dry_run": True})
    assert (second.status_code, second.json()["error"]["code"]) == (409, "job_running")
    assert second.json()["error"]["details"]["job_id"] == first.json()["job_id"]
    running = api.client.get(f"/v1/admin/jobs/{first.json()['job_id']}", headers=api.admin).json()
    assert running["status"] == "running" and running["heartbeat_at"] and running["progress"]["versions"] >= 0
    r = api.client.post(f"/v1/admin/jobs/{first.json()['job_id']}/cancel", headers=api.admin)
    assert r.status_code == 202 and r.json()["cancel_requested"], r.text
    assert _wait_done(api, first.json()["job_id"])["status"] == "cancelled"
    again = api.client.post(f"/v1/admin/jobs/{first.json()['job_id']}/cancel", headers=api.admin)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "job_finished")


def test_the_openapi_documents_the_jobs(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    for path, method in (("/v1/admin/jobs", "post"), ("/v1/admin/jobs", "get"), ("/v1/admin/jobs/{job_id}", "get"),
                         ("/v1/admin/jobs/{job_id}/cancel", "post")):
        assert {"401", "403", "422"} <= set(paths[path][method]["responses"]), path


@pytest.mark.slow
def test_a_relabel_job_through_the_whole_real_stack(real_api):
    """The real Presidio found a person's name: PERSON raised to restricted, a background relabel withholds it."""
    api = real_api
    api.source("hr", read_groups=["g"])
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    assert api.upload("hr", "review.md", "# Review\n\nMaria Schneider led the migration project this year.\n"
                      ).status_code == 201
    assert api.search(reader, "who led the migration project").json()["hits"]
    default = api.client.get("/v1/policy/labels", headers=api.admin).json()
    assert api.client.put("/v1/policy/labels", headers=api.admin,
                          json={"mapping": {**default["mapping"], "PERSON": "restricted"}}).status_code == 200
    r = api.client.post("/v1/admin/jobs", headers=api.admin, json={"kind": "relabel"})
    assert r.status_code == 202, r.text
    job = _wait_done(api, r.json()["job_id"], timeout=120)
    assert job["status"] == "succeeded" and job["result"]["raised"] == 1 and job["result"]["twins_lacking"] == 0
    body = api.search(reader, "who led the migration project").json()
    assert body["hits"] == [] and body["policy"]["withheld"][0]["reason"] == "clearance"


def test_the_cli_lists_jobs_and_cancels_one(container, monkeypatch):
    from typer.testing import CliRunner

    from memory import cli, cli_jobs  # noqa: F401  (registers commands)

    monkeypatch.setenv("MEMORY_DATA_DIR", str(container.settings.data_dir))
    monkeypatch.setenv("MEMORY_DATABASE_URL", container.settings.database_url)
    monkeypatch.setenv("MEMORY_ENV", "test")
    job_id = _create(container)
    container.close()  # the CLI's own container opens the database (and would the store)
    runner = CliRunner()
    r = runner.invoke(cli.app, ["jobs", "list", "--json"])
    assert r.exit_code == 0, r.output
    assert [(j["job_id"], j["status"]) for j in json.loads(r.output)] == [(job_id, "queued")]
    with transaction(container.sessions) as s:  # its runner (the API's) has it, beating
        s.execute(update(Job).where(Job.id == job_id).values(status="running", heartbeat_at=utcnow()))
    r = runner.invoke(cli.app, ["jobs", "cancel", job_id, "--actor", "ops"])
    assert r.exit_code == 0 and "cancel requested" in r.output, r.output
    r = runner.invoke(cli.app, ["jobs", "list", "--json"])
    assert [(j["status"], j["cancel_requested"]) for j in json.loads(r.output)] == [("running", True)]
    r = runner.invoke(cli.app, ["jobs", "list"], env={"COLUMNS": "300"})
    assert r.exit_code == 0 and job_id in r.output and "running (cancelling)" in r.output, r.output
    for args, code in ((["jobs", "cancel", "nope"], "job_not_found"), (["jobs", "list", "--status", "x"],
                                                                         "invalid_status")):
        r = runner.invoke(cli.app, args)
        assert r.exit_code == 2 and f"error: {code}:" in r.output, (args, r.output)


def test_the_database_itself_refuses_a_second_active_job_of_a_kind(container):
    """The safety net for two replicas starting at once (both read no active job): a partial unique index."""
    from sqlalchemy.exc import IntegrityError

    _create(container)
    with pytest.raises(IntegrityError), transaction(container.sessions) as s:
        s.add(Job(id="second", kind="relabel", status="running", params={}, requested_by="admin",
                  created_at=utcnow()))
    with transaction(container.sessions) as s:  # a finished one is no obstacle
        s.add(Job(id="old", kind="relabel", status="succeeded", params={}, requested_by="admin", created_at=utcnow()))


def test_a_live_job_in_a_long_step_without_progress_keeps_its_slot(container):
    """The runner beats on its own: a step with no progress (the twins' backfill after the last batch) is not
    taken for a lost runner, and no second job starts beside it."""
    stale = 0.4
    runner = jobs.JobRunner(container.sessions, stale_after_s=stale)
    first = _create(container)
    in_long_step = threading.Event()

    def work(progress: jobs.Progress) -> dict[str, Any]:
        progress({"versions": 1})
        in_long_step.set()
        time.sleep(4 * stale)  # no progress call
        return {"raised": 1}

    runner.start(first, work)
    assert in_long_step.wait(10)
    time.sleep(2 * stale)
    with transaction(container.sessions) as s:
        assert jobs.get(s, first, stale_after_s=stale).status == "running"
    with pytest.raises(ConflictError):
        _create(container)
    assert runner.wait(first, 10)
    assert (_job(container, first).status, _job(container, first).result) == ("succeeded", {"raised": 1})


def test_a_job_taken_for_lost_that_still_ends_records_its_true_end(container):
    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    job_id = _create(container)
    release, started = threading.Event(), threading.Event()

    def work(progress: jobs.Progress) -> dict[str, Any]:
        started.set()
        assert release.wait(10)
        return {"raised": 3}

    runner.start(job_id, work)
    assert started.wait(10)
    jobs.interrupt_all(container.sessions)  # another process decided it was lost (a frozen heartbeat)
    release.set()
    assert runner.wait(job_id, 10)
    job = _job(container, job_id)
    assert (job.status, job.result, job.error_code) == ("succeeded", {"raised": 3}, None)
    finishes = [a for a in _actions(container) if a == "job.finish"]
    assert len(finishes) == 2  # the interruption and the true end, both on the record


def test_a_job_interrupted_as_lost_is_audited_as_ended(container):
    job_id = _create(container)
    with transaction(container.sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            status="running", heartbeat_at=utcnow() - timedelta(seconds=700)))
    with transaction(container.sessions) as s:
        assert jobs.mark_stale(s, stale_after_s=600) == 1
    with container.sessions() as s:
        [rec] = [r for r in s.scalars(select(AuditRecord)) if r.body.get("action") == "job.finish"]
    assert (rec.body["target"], rec.body["details"]["status"], rec.body["details"]["error_code"]) == (
        job_id, "interrupted", "runner_lost")


def test_cancelling_a_queued_job_ends_it_at_once_and_frees_the_slot(container):
    job_id = _create(container)  # its replica died before starting it
    with transaction(container.sessions) as s:
        assert jobs.request_cancel(s, job_id, actor="admin", acting_for=None, stale_after_s=600).status == "cancelled"
    assert _create(container) != job_id
    assert _actions(container).count("job.finish") == 1


def test_a_stopping_runner_refuses_new_jobs_before_they_are_queued(container):
    from memory.errors import ServiceStoppingError

    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    runner.ensure_accepting()
    assert runner.stop(timeout=1)
    with pytest.raises(ServiceStoppingError) as err:
        runner.ensure_accepting()
    assert (err.value.status, err.value.code) == (503, "service_stopping")


def test_stop_says_when_a_job_did_not_end_in_time(container):
    runner = jobs.JobRunner(container.sessions, stale_after_s=600)
    job_id = _create(container)
    release, started = threading.Event(), threading.Event()

    def work(progress: jobs.Progress) -> dict[str, Any]:
        started.set()
        assert release.wait(10)  # a step that cannot stop half-way
        return {}

    runner.start(job_id, work)
    assert started.wait(10)
    assert runner.stop(timeout=0.2) is False  # the API then leaves the stores open (memory.api.app)
    release.set()
    assert runner.wait(job_id, 10)


def test_a_relabel_told_to_stop_stops_without_the_twins_backfill(container, monkeypatch):
    """A stop must be quick: the twins the finished batches need are left to the next start or run."""
    container.ingest_pipeline  # noqa: B018  (built before the backfill is replaced)
    calls: list[str] = []
    monkeypatch.setattr(type(container), "backfill_twins", lambda self, **kw: calls.append("backfill") or {})
    from tests.memory.test_masked_twins import EMAIL_DOC, _world

    _world(container, {"hr": {"mail.txt": EMAIL_DOC}})

    def stop(report: Any) -> None:
        raise jobs.Stopped("cancelled")

    with pytest.raises(jobs.Stopped):
        container.relabel(actor="admin", on_batch=stop)
    assert calls == []
    with pytest.raises(RuntimeError):  # any other failure still stores the twins earlier batches need
        container.relabel(actor="admin", on_batch=lambda report: (_ for _ in ()).throw(RuntimeError("boom")))
    assert calls == ["backfill"]


def test_a_hung_job_whose_cancel_goes_unheeded_is_taken_for_lost_and_frees_its_kind(container):
    """A step that never returns cannot be stopped from outside its thread: once a cancel has gone unheeded for
    the stale period the runner stops beating, so the job is marked lost and its kind can start again."""
    stale = 0.4
    runner = jobs.JobRunner(container.sessions, stale_after_s=stale)
    job_id = _create(container)
    hang, started = threading.Event(), threading.Event()

    def work(progress: jobs.Progress) -> dict[str, Any]:
        started.set()
        hang.wait(30)  # e.g. a vector-store call that never returns
        return {}

    runner.start(job_id, work)
    assert started.wait(10)
    time.sleep(2 * stale)
    with transaction(container.sessions) as s:
        assert jobs.get(s, job_id, stale_after_s=stale).status == "running"  # beating while not cancelled
        jobs.request_cancel(s, job_id, actor="admin", acting_for=None, stale_after_s=stale)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with transaction(container.sessions) as s:
            job = jobs.get(s, job_id, stale_after_s=stale)
            status, code = job.status, job.error_code
        if status != "running":
            break
        time.sleep(0.1)
    assert (status, code) == ("interrupted", "runner_lost")
    with transaction(container.sessions) as s:
        assert jobs.create(s, jobs.Requested(kind="relabel", params={}, requested_by="admin"),
                           stale_after_s=stale).status == "queued"
    hang.set()
    assert runner.wait(job_id, 10)


def test_cancelling_a_job_whose_runner_is_lost_ends_it_at_once(container):
    job_id = _create(container)
    with transaction(container.sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            status="running", heartbeat_at=utcnow() - timedelta(seconds=700)))
    with transaction(container.sessions) as s:
        job = jobs.request_cancel(s, job_id, actor="admin", acting_for=None, stale_after_s=600)
        assert (job.status, job.error_code) == ("interrupted", "runner_lost")
    assert _actions(container)[-2:] == ["job.cancel", "job.finish"]
    assert _create(container) != job_id


def test_a_cancel_and_a_runners_end_take_their_locks_in_one_order(container):
    """request_cancel locks the job's row, then the audit head: the order JobRunner._finish takes. (It used to
    sweep every stale job first: their rows and the audit head, then the job's row; PostgreSQL then killed one
    of the two as a deadlock, losing the job's true end when it chose the finish.)"""
    from tests.conftest import PG_URL

    if not PG_URL:
        pytest.skip("row locks: PostgreSQL")
    job_id = _create(container)
    with transaction(container.sessions) as s:  # a stale job of another kind (rows only: one kind is allowed)
        s.add(Job(id="stale", kind="other", status="running", params={}, requested_by="admin",
                  created_at=utcnow() - timedelta(hours=1), heartbeat_at=utcnow() - timedelta(hours=1)))
    with transaction(container.sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(status="running", heartbeat_at=utcnow()))
    errors: dict[str, str] = {}
    locked = threading.Event()

    def finisher() -> None:  # what JobRunner._finish does, paused between its two locks
        try:
            with transaction(container.sessions) as s:
                job = s.get(Job, job_id, with_for_update=True)
                locked.set()
                time.sleep(1.0)
                jobs.end(s, job, "succeeded", result={})
        except Exception as exc:
            errors["finish"] = type(exc).__name__

    def canceller() -> None:
        try:
            with transaction(container.sessions) as s:
                jobs.request_cancel(s, job_id, actor="admin", acting_for=None, stale_after_s=600)
        except Exception as exc:
            errors["cancel"] = type(exc).__name__

    t1 = threading.Thread(target=finisher)
    t1.start()
    assert locked.wait(10)
    t2 = threading.Thread(target=canceller)
    t2.start()
    t1.join(30)
    t2.join(30)
    assert errors == {"cancel": "ConflictError"}  # the finish committed; the cancel then saw it ended (409)
    assert _job(container, job_id).status == "succeeded"


def test_a_cancelled_job_whose_batch_is_slow_not_hung_records_its_true_end(container):
    """After a cancel, a batch slower than the stale period stops the beats, so the job is taken for lost
    (runner_lost); when the batch does end and heeds the cancel, the job's true end, cancelled, is recorded."""
    stale = 0.4
    runner = jobs.JobRunner(container.sessions, stale_after_s=stale)
    job_id = _create(container)
    cancelled = threading.Event()

    def work(progress: jobs.Progress) -> dict[str, Any]:
        progress({"batch": 0})
        cancelled.wait(10)
        time.sleep(6 * stale)  # one slow batch, then the progress call that heeds the cancel
        progress({"batch": 1})
        return {}

    runner.start(job_id, work)
    time.sleep(0.2)
    with transaction(container.sessions) as s:
        jobs.request_cancel(s, job_id, actor="admin", acting_for=None, stale_after_s=stale)
    cancelled.set()
    time.sleep(5 * stale)
    with transaction(container.sessions) as s:  # any admin's GET sweeps stale jobs
        assert jobs.get(s, job_id, stale_after_s=stale).error_code == "runner_lost"
    assert runner.wait(job_id, 10)
    job = _job(container, job_id)
    assert (job.status, job.error_code) == ("cancelled", None)


def test_the_repair_loop_is_told_to_stop_at_once_and_says_whether_it_ended(container):
    """The API's shutdown signals the repair loop and the jobs together, then waits against one deadline: a run
    still going past it keeps the stores open (memory.api.app)."""
    from memory.maintenance import RepairLoop

    release, started = threading.Event(), threading.Event()

    def slow_first() -> None:
        started.set()
        release.wait(10)

    loop = RepairLoop(container.sessions, container.store, interval_s=3600, pending_grace_s=900, first=slow_first)
    loop.start()
    assert started.wait(10)
    loop.signal_stop()
    assert loop.stop(timeout_s=0.2) is False  # still in its run
    release.set()
    assert loop.stop(timeout_s=10) is True


# -- a source's new floor, relabelled in the background --------------------------------------------------------

NOTE = "# Renewal\n\nThe renewal terms for next year.\n"


def _floor_world(api: Any) -> tuple[dict[str, str], dict[str, str]]:
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"], clearance="restricted")
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "note.md", NOTE, steward).status_code == 201
    assert len(api.search(reader, "renewal terms").json()["hits"]) == 1
    return steward, reader


def _wait_own(api: Any, headers: dict[str, str], location: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.client.get(location, headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("queued", "running"):
            return dict(r.json())
        time.sleep(0.05)
    raise AssertionError(f"{location} did not end")


def test_a_stewards_new_floor_relabels_in_the_background_and_the_steward_follows_the_job(api):
    """`relabel=background`: 202 at once with the queued job (the floor holds for searches from the commit); the
    steward who asked follows the job at /v1/jobs/{id} (no admin role needed) to its result; another caller
    cannot see it (404, as for an unknown job); an admin can."""
    steward, reader = _floor_world(api)
    other = api.principal("st2", roles=["steward", "reader"], groups=["g"])
    r = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "background"},
                         json={"floor": "restricted"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["floor"] == "restricted" and body["relabel"] is None
    job = body["relabel_job"]
    assert (job["kind"], job["scope"], job["status"], job["params"], job["requested_by"]) == (
        "relabel", "source:s1", "queued", {"source_id": "s1", "dry_run": False}, "st")
    assert r.headers["Location"] == f"/v1/jobs/{job['job_id']}"
    # The floor holds from the commit, whether or not the job has run yet.
    held = api.search(reader, "renewal terms").json()
    assert held["hits"] == [] and held["policy"]["withheld"][0]["reason"] == "clearance"

    done = _wait_own(api, steward, r.headers["Location"])
    assert done["status"] == "succeeded", done
    assert (done["result"]["raised"], done["result"]["versions"]) == (1, 1)
    assert api.client.get(r.headers["Location"], headers=api.admin).status_code == 200
    hidden = api.client.get(r.headers["Location"], headers=other)
    assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "job_not_found")
    assert api.client.get("/v1/jobs/nope", headers=steward).json()["error"]["code"] == "job_not_found"
    assert api.client.get(r.headers["Location"]).status_code == 401
    actions = [x["body"]["action"] for x in
               api.client.get("/v1/audit", headers=api.admin, params={"event": "write"}).json()["records"]]
    assert actions[-4:] == ["job.start", "source.update", "policy.relabel", "job.finish"], actions

    # Lowered again, waiting for the relabel: 200 with its report, no job.
    r = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "wait"}, json={"floor": "public"})
    assert r.status_code == 200 and r.json()["relabel"]["lowered"] == 1 and r.json()["relabel_job"] is None
    assert len(api.search(reader, "renewal terms").json()["hits"]) == 1


def test_auto_waits_for_a_small_source_and_starts_a_job_for_a_larger_one(api, monkeypatch):
    steward, _ = _floor_world(api)
    r = api.client.patch("/v1/sources/s1", headers=steward, json={"floor": "confidential"})  # auto: 1 chunk
    assert r.status_code == 200 and r.json()["relabel"]["raised"] == 1 and r.json()["relabel_job"] is None
    monkeypatch.setattr(api.container.settings, "floor_relabel_wait_max_chunks", 0)
    r = api.client.patch("/v1/sources/s1", headers=steward, json={"floor": "restricted"})
    assert r.status_code == 202 and r.json()["relabel"] is None, r.text
    assert _wait_own(api, steward, r.headers["Location"])["result"]["raised"] == 1
    # Without a floor nothing is relabelled, whatever the mode.
    r = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "background"},
                         json={"description": "notes"})
    assert r.status_code == 200 and (r.json()["relabel"], r.json()["relabel_job"]) == (None, None)
    bad = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "later"}, json={"floor": "public"})
    assert bad.status_code == 422


def test_a_background_floor_refused_for_a_running_relabel_of_its_source_changes_nothing(api, monkeypatch):
    """A relabel job of every source runs: a floor's job (its own source's slot) still starts. One of this source
    runs: the patch is 409 `job_running`, naming the job to the admin who started it but not to the steward, and
    neither its floor nor its read groups changed (in SQL or in the vectors: the reader still finds the note)."""
    steward, reader = _floor_world(api)
    started, beats = threading.Event(), []
    real_work = type(api.container).relabel_work
    monkeypatch.setattr(type(api.container), "relabel_work", lambda self, **kw: _blocking(started, beats))
    every = api.client.post("/v1/admin/jobs", headers=api.admin, json={"kind": "relabel"})
    assert every.status_code == 202 and started.wait(10)
    started.clear()
    own = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "background"},
                           json={"floor": "confidential"})
    assert own.status_code == 202 and started.wait(10), own.text
    for job in (own.json()["relabel_job"], every.json()):
        api.client.post(f"/v1/admin/jobs/{job['job_id']}/cancel", headers=api.admin)
        assert _wait_done(api, job["job_id"])["status"] == "cancelled"

    first = api.client.post("/v1/admin/jobs", headers=api.admin, json={"kind": "relabel", "source_id": "s1"})
    assert first.status_code == 202 and started.wait(10)
    r = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "background"},
                         json={"floor": "restricted", "read_groups": ["g", "h"]})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "job_running"), r.text
    assert r.json()["error"]["details"]["job_id"] is None  # the admin's job: not the steward's to follow
    source = api.client.get("/v1/sources/s1", headers=steward).json()
    assert (source["floor"], source["read_groups"]) == ("confidential", ["g"])
    held = api.search(reader, "renewal terms").json()  # still there for the reader: its groups and floor held
    assert len(held["hits"]) == 1
    by_admin = api.client.patch("/v1/sources/s1", headers=api.admin, params={"relabel": "background"},
                                json={"floor": "restricted"})
    assert by_admin.status_code == 409 and by_admin.json()["error"]["details"]["job_id"] == first.json()["job_id"]
    api.client.post(f"/v1/admin/jobs/{first.json()['job_id']}/cancel", headers=api.admin)
    assert _wait_done(api, first.json()["job_id"])["status"] == "cancelled"
    monkeypatch.setattr(type(api.container), "relabel_work", real_work)
    again = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "background"},
                             json={"floor": "restricted"})
    assert again.status_code == 202, again.text
    assert _wait_own(api, steward, again.headers["Location"])["status"] == "succeeded"


def test_a_steward_cancels_its_own_floor_job_and_the_floor_still_holds(api, monkeypatch):
    steward, reader = _floor_world(api)
    other = api.principal("st2", roles=["steward", "reader"], groups=["g"])
    started, beats = threading.Event(), []
    monkeypatch.setattr(type(api.container), "relabel_work", lambda self, **kw: _blocking(started, beats))
    r = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "background"},
                         json={"floor": "restricted"})
    assert r.status_code == 202 and started.wait(10), r.text
    cancel = r.headers["Location"] + "/cancel"
    refused = api.client.post(cancel, headers=other)
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "job_not_found")
    assert api.client.get(r.headers["Location"], headers=steward).json()["cancel_requested"] is False
    ok = api.client.post(cancel, headers=steward)
    assert ok.status_code == 202 and ok.json()["cancel_requested"], ok.text
    assert _wait_own(api, steward, r.headers["Location"])["status"] == "cancelled"
    again = api.client.post(cancel, headers=steward)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "job_finished")
    body = api.search(reader, "renewal terms").json()  # no relabel ran: the floor holds at query time
    assert body["hits"] == [] and body["policy"]["withheld"][0]["reason"] == "clearance"


@pytest.mark.slow
def test_a_background_floor_through_the_whole_real_stack(real_api):
    """Real Presidio, model, SQL and Qdrant Edge: a steward's floor relabels in the background; the reader below it
    is withheld the note at once and after the job."""
    api = real_api
    steward = api.principal("st", roles=["steward", "reader"], groups=["g"], clearance="restricted")
    reader = api.principal("r1", groups=["g"], clearance="confidential")
    api.source("s1", read_groups=["g"], steward="st")
    assert api.upload("s1", "review.md", "# Review\n\nMaria Schneider led the migration project this year.\n",
                      steward).status_code == 201
    assert api.search(reader, "who led the migration project").json()["hits"]
    r = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "background"},
                         json={"floor": "restricted"})
    assert r.status_code == 202, r.text
    assert api.search(reader, "who led the migration project").json()["hits"] == []
    job = _wait_own(api, steward, r.headers["Location"], timeout=120)
    assert job["status"] == "succeeded" and job["result"]["raised"] == 1, job
    body = api.search(reader, "who led the migration project").json()
    assert body["hits"] == [] and body["policy"]["withheld"][0]["reason"] == "clearance"


def test_the_openapi_documents_the_background_floor_and_the_requesters_job(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    patch = paths["/v1/sources/{source_id}"]["patch"]
    assert {"200", "202", "409"} <= set(patch["responses"])
    mode = next(p for p in patch["parameters"] if p["name"] == "relabel")
    assert mode["schema"]["enum"] == ["auto", "wait", "background"]
    assert {"401", "404"} <= set(paths["/v1/jobs/{job_id}"]["get"]["responses"])
    assert {"401", "404", "409"} <= set(paths["/v1/jobs/{job_id}/cancel"]["post"]["responses"])


def test_an_agent_acting_for_the_steward_follows_the_stewards_job(api):
    """A job is visible to the user it was done for and to the agents acting for that user (a floor change
    itself needs the steward's own key); the agent on its own account, and another user, get the 404 of an
    unknown job."""
    steward, _ = _floor_world(api)
    bot = api.principal("bot", kind="agent", roles=["steward", "reader"], groups=["g"], clearance="restricted",
                        may_act_for=["st"])
    other = api.principal("st2", roles=["steward", "reader"], groups=["g"])
    started = api.client.patch("/v1/sources/s1", headers=steward, params={"relabel": "background"},
                               json={"floor": "restricted"})
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    assert _wait_own(api, {**bot, "X-Acting-For": "st"}, location)["status"] == "succeeded"
    for outsider in (bot, other):
        hidden = api.client.get(location, headers=outsider)
        assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "job_not_found")
        stopped = api.client.post(f"{location}/cancel", headers=outsider)
        assert (stopped.status_code, stopped.json()["error"]["code"]) == (404, "job_not_found")
    finished = api.client.post(f"{location}/cancel", headers={**bot, "X-Acting-For": "st"})
    assert (finished.status_code, finished.json()["error"]["code"]) == (409, "job_finished")
