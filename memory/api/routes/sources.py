"""Sources (stewards register and manage them) and document upload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUploadFile

from memory import documents, sources
from memory import relabel as relabel_svc
from memory.api import presenters, schemas
from memory.api.deps import ContainerDep, SessionDep, TransactionPerHop, ending_its_transaction, role
from memory.api.routes.jobs import queue_relabel, start_relabel
from memory.bootstrap import Container
from memory.errors import ValidationFailedError
from memory.policy import EffectivePrincipal

router = APIRouter(prefix="/v1", tags=["sources"], responses=schemas.ERRORS, route_class=TransactionPerHop)
StewardDep = Annotated[EffectivePrincipal, role("steward")]
# Reading sources: their stewards and readers, and auditors (who see every source, memory.sources).
SourceReaderDep = Annotated[EffectivePrincipal, role("steward", "auditor")]
RelabelMode = Literal["auto", "wait", "background"]


@router.post("/sources", status_code=201, response_model=schemas.SourceOut)
def register_source(body: schemas.SourceCreate, session: SessionDep, who: StewardDep) -> schemas.SourceOut:
    """Register a source: owner/steward (by default the caller), jurisdiction of residence, read groups,
    classification floor, flags and the purposes its data subjects consented to. 422 `invalid_purpose`. Under
    X-Acting-For 403 `delegated_change_refused`: who reads a source and under what rules needs a steward's own key
    (an admin's agent excepted)."""
    sources.refuse_delegated_governance(["register"], who=who, what="registering a source")
    spec = sources.NewSource(
        id=body.id, name=body.name, steward=body.steward or sources.steward_identity(who),
        jurisdiction=body.jurisdiction,
        read_groups=tuple(body.read_groups), floor=body.floor, uri=body.uri, description=body.description,
        personal_data_requires_consent=body.personal_data_requires_consent,
        consent_purposes=tuple(body.consent_purposes),
    )
    return presenters.source(sources.register(session, spec=spec, actor=who.principal_id, acting_for=who.acting_for,
                                              names_principals="admin" in who.roles))


@router.get("/sources", response_model=list[schemas.SourceOut])
def list_sources(session: SessionDep, who: SourceReaderDep) -> list[schemas.SourceOut]:
    """The sources the caller stewards or whose read groups they hold (admins and auditors: all)."""
    return [presenters.source(s) for s in sources.list_visible(session, who=who)]


@router.get("/sources/{source_id}", response_model=schemas.SourceOut)
def get_source(source_id: str, session: SessionDep, who: SourceReaderDep) -> schemas.SourceOut:
    """One source, if the caller stewards it or reads it (admins and auditors: any); else 404 `source_not_found`."""
    return presenters.source(sources.get_visible(session, who=who, source_id=source_id))


@router.patch("/sources/{source_id}", response_model=schemas.SourceUpdated,
              responses={202: {"model": schemas.SourceUpdated,
                               "description": "Changed; the new floor's relabel runs as the background job named in "
                               "`relabel_job` and `Location`",
                               "headers": {"Location": {"description": "The job: /v1/jobs/{job_id}",
                                                        "schema": {"type": "string"}}}}})
def update_source(
    source_id: str, body: schemas.SourcePatchIn, request: Request, response: Response, session: SessionDep,
    who: StewardDep, container: ContainerDep,
    relabel: Annotated[RelabelMode, Query(description=(
        "How a new floor reaches the chunks already stored: `wait` relabels them before answering (200, `relabel`); "
        "`background` starts a relabel job of this source and answers at once (202, `relabel_job`); `auto` waits "
        "when the source holds at most MEMORY_FLOOR_RELABEL_WAIT_MAX_CHUNKS chunks, else starts the job. Ignored "
        "without a floor."))] = "auto",
) -> schemas.SourceUpdated:
    """Change a source (its steward or an admin; 403 `not_source_steward` for another steward who reads it, 404
    `source_not_found` for one who does not, as for an unknown id). Under X-Acting-For only the name and the
    description: the steward, read groups, jurisdiction, floor and consent need the steward's own key (403
    `delegated_change_refused`), and the agent's own groups must read the source. New read groups or
    jurisdiction reach the vectors before this returns; consent (the flag and purposes) is read at query time, so
    it applies to the next search.

    A floor (new or not) holds for every search from this commit (a chunk's label is never below its source's
    floor), labels what is ingested next and relabels the chunks already stored (memory.relabel under the label
    map in force), before this returns or as a background job (`relabel`). A job is queued in this change's
    transaction: 409 `job_running` (nothing changed) while another relabel job of this source is queued or
    running (its `job_id` named only to a caller who may follow it), 503
    `service_stopping` while the API stops. If a relabel run before returning fails after the floor committed,
    the error is returned and the chunks keep labels at least as strict as before; a failed job says so; sending
    the floor again finishes either."""
    # Locked before the steward is checked: a steward handover committed meanwhile is seen (PostgreSQL), and the
    # source row comes before the job's rows and the audit head, every writer's lock order.
    sources.ensure_steward(who, sources.get(session, source_id=source_id, for_update=True))
    patch = sources.SourcePatch(
        name=body.name, steward=body.steward, jurisdiction=body.jurisdiction,
        read_groups=tuple(body.read_groups) if body.read_groups is not None else None, floor=body.floor,
        description=body.description, personal_data_requires_consent=body.personal_data_requires_consent,
        consent_purposes=tuple(body.consent_purposes) if body.consent_purposes is not None else None,
    )
    sources.refuse_delegated_governance(patch.governs(), who=who, what="changing a source's governance")
    job = None
    if body.floor is not None and _relabels_in_background(session, container, source_id, relabel):
        # Queued before the source changes: a refused job (409) leaves nothing changed, the vectors included.
        job = queue_relabel(session, request, who, source_id=source_id)
    update = sources.update(session, source_id=source_id, patch=patch, store=container.store, actor=who.principal_id,
                            acting_for=who.acting_for, names_principals="admin" in who.roles)
    out = presenters.source(update.source)
    queued = presenters.job(job) if job is not None else None
    session.commit()  # the new access reaches the vectors only once SQL holds it (sources.update)
    if job is not None:  # started at once, whatever follows: a committed job left queued would hold its slot
        start_relabel(request, container, who, job)
    if update.access_changed:
        sources.publish_access(container.sessions, container.store, source_id)
    relabelled = None
    if job is not None:
        response.status_code = 202
        response.headers["Location"] = f"/v1/jobs/{job.id}"
    elif body.floor is not None:
        relabelled = schemas.RelabelOut(**container.relabel(  # type: ignore[arg-type]
            actor=who.principal_id, acting_for=who.acting_for, source_id=source_id))
    return schemas.SourceUpdated(**out.model_dump(), relabel=relabelled, relabel_job=queued)


def _relabels_in_background(session: Session, container: Container, source_id: str, mode: RelabelMode) -> bool:
    if mode != "auto":
        return mode == "background"
    return relabel_svc.chunks_exceed(session, source_id, container.settings.floor_relabel_wait_max_chunks)


@ending_its_transaction
def _may_upload(source_id: str, session: SessionDep, who: StewardDep) -> EffectivePrincipal:
    """The caller may upload to this source (its steward or an admin; else 403 `not_source_steward` or 404
    `source_not_found`), decided before the upload's body is read."""
    sources.ensure_steward(who, sources.get(session, source_id=source_id))
    return who


@dataclass(frozen=True)
class Upload:
    file: StarletteUploadFile
    external_key: str | None


async def _upload_form(
    request: Request, _: Annotated[EffectivePrincipal, Depends(_may_upload)]
) -> AsyncIterator[Upload]:
    """The upload's multipart body, read only once the caller's key, rate and stewardship of the source have been
    checked (`_may_upload`): a wrong key, a caller over its ingest limit or another team's steward is answered
    without the server receiving the file (up to MEMORY_MAX_UPLOAD_BYTES). One document per upload: with two
    `file` parts a form would keep the last, silently (422 `multiple_files`). A body that is not a form with one
    `file` is 422 `invalid_request`, as FastAPI would answer it."""
    async with request.form(max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS) as form:
        files, keys = form.getlist("file"), form.getlist("external_key")
        if len(files) > 1 or len(keys) > 1:
            raise ValidationFailedError("send one file (and at most one external_key) per upload",
                                        code="multiple_files")
        errors = []
        if not files or not isinstance(files[0], StarletteUploadFile):
            errors.append({"type": "missing" if not files else "value_error", "loc": ("body", "file"),
                           "msg": "Field required" if not files else "Expected a file", "input": None})
        if keys and not isinstance(keys[0], str):
            errors.append({"type": "string_type", "loc": ("body", "external_key"),
                           "msg": "Input should be a valid string", "input": None})
        if errors:
            raise RequestValidationError(errors)
        yield Upload(file=cast(StarletteUploadFile, files[0]), external_key=cast(str | None, keys[0] if keys else None))


# Fields a client may send beside `file` and `external_key` (ignored), and files (more than one is 422
# multiple_files); past these the body is 422 invalid_request, unparsed.
_MAX_FORM_FIELDS = 16
_MAX_FORM_FILES = 16


@router.post(
    "/sources/{source_id}/documents", status_code=201, response_model=schemas.IngestOut,
    responses={200: {"model": schemas.IngestOut, "description": "`unchanged`: these bytes are already the "
                     "document's current version; no version was created"}},
    # The body is read by `_upload_form` after the caller is checked, so FastAPI does not document it itself.
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": schemas.UPLOAD_FORM}}}},
)
def upload_document(
    source_id: str,
    response: Response,
    session: SessionDep,
    who: StewardDep,
    container: ContainerDep,
    upload: Annotated[Upload, Depends(_upload_form)],
) -> schemas.IngestOut:
    """Upload one file (multipart: `file`, optional `external_key`, the document's identity in the source, by
    default the file name): 201 created / updated (a new version), 200 unchanged (the same bytes as the current
    version: nothing stored), with chunk and PII summary. Bad files -> 422 + code. Only the source's steward (or
    an admin): another steward gets 403 `not_source_steward` if they read the source, else 404
    `source_not_found`, as for an unknown id; these, a wrong key (401) and a caller over its ingest limit (429)
    are answered before the file is received. 409 `label_map_changed` / `floor_changed`: the label map or the
    source's floor changed while the file was processed (nothing stored; send it again); 409
    `concurrent_update`: another upload of the same document won (retry)."""
    # Again, now that the body has arrived (a large file takes a while): the stewardship in force decides.
    sources.ensure_steward(who, sources.get(session, source_id=source_id))
    data = upload.file.file.read(container.settings.max_upload_bytes + 1)
    # Ingestion runs its own units of work (no half-visible version); end this request's transaction first
    # so SQLite's single writer lock is free for them.
    session.commit()
    outcome = documents.ingest_upload(
        container.sessions, container.store, container.ingest_pipeline(), source_id=source_id, data=data,
        filename=upload.file.filename or "upload", external_key=upload.external_key, actor=who.principal_id,
        acting_for=who.acting_for, max_bytes=container.settings.max_upload_bytes,
    )
    if outcome.status == "unchanged":
        response.status_code = 200
    else:
        container.note_ingest()  # the embedded index's backlog grew
    return presenters.ingest(outcome)
