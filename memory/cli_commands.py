"""CLI commands for sources, ingestion, search and policy (registered on memory.cli.app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from memory.bootstrap import Container
from memory.cli import (
    Actor,
    DataDir,
    actor_id,
    app,
    container_for,
    csv_list,
    fail,
    out,
    policy_app,
    print_ids_table,
    print_json,
    run,
    sources_app,
)
from memory.db import transaction
from memory.maintenance import unindexed_points


@sources_app.command("add")
def sources_add(
    source_id: Annotated[str, typer.Argument(help="Source id.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    steward: Annotated[str, typer.Option(help="Steward principal id.")],
    jurisdiction: Annotated[str, typer.Option(help="Where the data resides (EU, US, UK, IN ...).")],
    read_groups: Annotated[str, typer.Option(help="Comma-separated groups that may read; empty = nobody.")] = "",
    floor: Annotated[str, typer.Option(help="Floor: public|internal|confidential|restricted.")] = "internal",
    uri: Annotated[str, typer.Option(help="Where the source lives (for citations).")] = "",
    consent_required: Annotated[bool, typer.Option(
        help="Flag: personal data is served only to searches stating a consented purpose.")] = False,
    consent_purposes: Annotated[str, typer.Option(
        help="Comma-separated purposes the data subjects consented to (lowercase slugs).")] = "",
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Register a source."""
    from memory import sources

    def _do(c: Container) -> None:
        with transaction(c.sessions) as s:
            sources.register(s, spec=sources.NewSource(
                id=source_id, name=name, steward=steward, jurisdiction=jurisdiction, read_groups=csv_list(read_groups),
                floor=floor, uri=uri, personal_data_requires_consent=consent_required,
                consent_purposes=csv_list(consent_purposes),
            ), actor=actor_id(actor), names_principals=True)  # the CLI is the operators' tool

    run(data_dir, _do)
    out.print(f"registered source {source_id}", markup=False)


@sources_app.command("list")
def sources_list(data_dir: DataDir = None) -> None:
    """List sources."""
    from memory import sources
    from memory.api import presenters

    def _do(c: Container) -> list[dict[str, Any]]:
        with c.sessions() as s:
            return [presenters.source(x).model_dump(mode="json") for x in sources.list_all(s)]

    rows = run(data_dir, _do)
    table = Table("id", "name", "steward", "jurisdiction", "read groups", "floor", "consent")
    for x in rows:
        consent = "for " + (", ".join(x["consent_purposes"]) or "no purpose") if x["personal_data_requires_consent"] \
            else ""
        table.add_row(x["id"], x["name"], x["steward"], x["jurisdiction"], ",".join(x["read_groups"]), x["floor"],
                      consent)
    print_ids_table(table, [x["id"] for x in rows])  # piped or narrow, still the id other commands take


@sources_app.command("update")
def sources_update(
    source_id: str,
    read_groups: Annotated[str | None, typer.Option(help="New comma-separated read groups.")] = None,
    jurisdiction: Annotated[str | None, typer.Option(help="New jurisdiction.")] = None,
    floor: Annotated[str | None, typer.Option(help="New floor (labels future ingests, and the source's stored "
                                              "chunks before this returns: `memory relabel --source`).")] = None,
    steward: Annotated[str | None, typer.Option(help="New steward.")] = None,
    consent_required: Annotated[bool | None, typer.Option(
        "--consent-required/--no-consent-required", help="Set or clear the consent flag.")] = None,
    consent_purposes: Annotated[str | None, typer.Option(
        help="New comma-separated consented purposes (replaces the list; empty clears it).")] = None,
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Change a source's access rules (reach the vectors before this returns; consent applies to the next search).
    A floor relabels the source's stored chunks too."""
    from memory import sources

    def _do(c: Container) -> None:
        with transaction(c.sessions) as s:
            update = sources.update(s, source_id=source_id, store=c.store, actor=actor_id(actor),
                                    names_principals=True, patch=sources.SourcePatch(
                read_groups=csv_list(read_groups) if read_groups is not None else None, jurisdiction=jurisdiction,
                floor=floor, steward=steward, personal_data_requires_consent=consent_required,
                consent_purposes=csv_list(consent_purposes) if consent_purposes is not None else None,
            ))
        if update.access_changed:  # after the commit (sources.update)
            sources.publish_access(c.sessions, c.store, source_id)
        if floor is not None:
            relabelled = c.relabel(actor=actor_id(actor), source_id=source_id)
            out.print(f"relabelled {relabelled['versions_relabelled']} of {relabelled['versions']} versions under the "
                      f"new floor ({relabelled['raised']} chunks raised, {relabelled['lowered']} lowered)",
                      markup=False, soft_wrap=True)

    run(data_dir, _do)
    out.print(f"updated source {source_id}", markup=False)


@app.command()
def ingest(
    source_id: Annotated[str, typer.Argument(help="Source id.")],
    paths: Annotated[list[str], typer.Argument(help="Files or folders (recursive).")],
    data_dir: DataDir = None,
    actor: Actor = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print outcomes as JSON.")] = False,
    optimize: Annotated[bool, typer.Option(help="Build the vector index afterwards (embedded store).")] = True,
    uri_base: Annotated[str | None, typer.Option(
        "--uri-base", help="Where readers find the originals: each document's URI becomes this + its path "
        "relative to the folder given (default: its file:// URI on this host).")] = None,
) -> None:
    """Ingest files into a source: parse, chunk, classify, version, embed, store. Exit 1 if any file failed."""
    from memory import documents, sources

    with container_for(data_dir) as c:
        with c.sessions() as s:
            sources.get(s, source_id=source_id)  # unknown source: one clear error before any work
        files = [f for f in documents.iter_files(paths)]
        with Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=out, transient=True, disable=as_json) as progress:
            task = progress.add_task("files", total=len(files))
            outcomes = documents.ingest_paths(
                c.sessions, c.store, c.ingest_pipeline, source_id=source_id, paths=paths, actor=actor_id(actor),
                max_bytes=c.settings.max_upload_bytes, on_progress=lambda n: progress.advance(task, n),
                uri_base=uri_base,
            )
        c.store.flush()
        if optimize and hasattr(c.store, "optimize"):
            # Blocking and CPU-bound (it holds the GIL): done here, by the process that owns the store,
            # never on the API's request path.
            c.store.optimize()
    if as_json:
        print_json([o.__dict__ for o in outcomes])
    else:
        _summary(outcomes)
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


def _summary(outcomes: list[Any]) -> None:
    counts = {k: sum(1 for o in outcomes if o.status == k) for k in ("created", "updated", "unchanged", "failed")}
    entities: dict[str, int] = {}
    for o in outcomes:
        for k, v in o.entity_counts.items():
            entities[k] = entities.get(k, 0) + v
    table = Table("documents", "created", "updated", "unchanged", "failed", "chunks", "embedded")
    table.add_row(str(len(outcomes)), *(str(counts[k]) for k in counts), str(sum(o.chunks for o in outcomes)),
                  str(sum(o.embedded for o in outcomes)))
    out.print(table)
    if entities:
        et = Table("PII entity", "count")
        for k, v in sorted(entities.items(), key=lambda kv: -kv[1]):
            et.add_row(k, str(v))
        out.print(et)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        ft = Table("failed file", "code", "reason")
        for o in failed:
            ft.add_row(o.external_key, o.error_code or "", o.error or "")
        out.print(ft)
    warned = [(o, w) for o in outcomes for w in o.warnings]
    if warned:
        wt = Table("ingested with warnings", "attachment", "code", "reason")
        for o, w in warned:
            wt.add_row(o.external_key, w["attachment"] or "", w["code"] or "", w["message"] or "")
        out.print(wt)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Query text.")],
    principal: Annotated[str, typer.Option("--as", help="Principal id to search as.")],
    acting_for: Annotated[str | None, typer.Option(help="User id the principal acts for.")] = None,
    top_k: Annotated[int, typer.Option(help="Number of hits.")] = 5,
    purpose: Annotated[str | None, typer.Option(
        help="Why you search (slug): personal data of consent-gated sources needs a consented purpose.")] = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full response as JSON.")] = False,
) -> None:
    """Search as a principal (operator tool: same policy, filter and audit as the API)."""
    from memory import principals
    from memory import search as search_svc
    from memory.api import presenters

    def _do(c: Container) -> dict[str, Any]:
        with transaction(c.sessions) as s:
            caller = principals.get_principal(s, principal_id=principal)
            if not caller.active:
                fail("inactive_principal", f"{principal} is inactive")
            who = principals.resolve_effective(s, caller=caller, acting_for=acting_for)
            result = search_svc.search(s, store=c.store, embedder=c.embedder, who=who,
                                       request=search_svc.SearchRequest(query=query, top_k=top_k, purpose=purpose))
            return presenters.search(result).model_dump(mode="json")

    res = run(data_dir, _do)
    if as_json:
        print_json(res)
        return
    for i, h in enumerate(res["hits"], 1):
        cit = h["citation"]
        flag = " [masked]" if h["masked"] else ""
        out.print(f"{i}. {h['score']:.3f} {cit['source_id']}/{cit['document_id']} v{cit['version']} "
                  f"({h['label']}){flag}", markup=False)
        out.print("   " + h["text"][:300].replace("\n", " "), markup=False)
    for w in res["policy"]["withheld"]:
        out.print(f"withheld: {w['count']} from {w['source_id']} ({w['reason']}); ask {w['steward']}", markup=False)


@app.command("stale-versions")
def stale_versions_cmd(
    source: Annotated[str | None, typer.Option("--source", help="Only this source's documents.")] = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """Documents whose current version an older pipeline processed (after an upgrade): ingesting their bytes
    again classifies them anew (docs/operations.md, "Reprocessing after an upgrade")."""
    from ingest.versioning import PIPELINE_VERSION
    from memory import documents, sources

    def _do(c: Container) -> list[dict[str, Any]]:
        with c.sessions() as s:
            if source is not None:
                sources.get(s, source_id=source)  # unknown source: one clear error
            return [{"document_id": v.document_id, "version": v.version, "uri": v.uri, "pipeline": v.pipeline_version}
                    for v in documents.stale_versions(s, source_id=source)]

    stale = run(data_dir, _do)
    if as_json:
        print_json({"pipeline": PIPELINE_VERSION, "stale": stale})
        return
    for v in stale:
        out.print(f"{v['document_id']} v{v['version']} {v['uri']} (pipeline {v['pipeline']})", markup=False,
                  soft_wrap=True)
    out.print(f"{len(stale)} documents to ingest again (pipeline {PIPELINE_VERSION})", markup=False, soft_wrap=True)


@app.command("optimize")
def optimize_cmd(data_dir: DataDir = None) -> None:
    """Build the embedded vector index now (run while the API is stopped: one process owns the store)."""

    def _do(c: Container) -> tuple[int, int, int]:
        was = unindexed_points(c.store.stats())
        if hasattr(c.store, "optimize"):
            c.store.optimize()
        after = c.store.stats()
        return after["points"], was, unindexed_points(after)

    points, was, now = run(data_dir, _do)
    # A store below the indexing threshold stays unindexed (scored exactly, which is fast at that size).
    out.print(f"vector index optimised: {points} points, {now} not covered by an index (was {was})")


@app.command("repair")
def repair_cmd(
    data_dir: DataDir = None,
    actor: Actor = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Finish what a crash or a failed vector-store call left half done (the API runs this at every start):
    ingests left pending are undone, versions left unsynced are copied to the vectors, and sources whose
    access change was left narrowed get the access SQL holds (audited when anything was fixed). Safe while the
    API runs on PostgreSQL + Qdrant server; on the embedded store, stop the API first (one process owns it) or
    call `POST /v1/admin/repair`."""
    from memory.maintenance import run_repair

    def _do(c: Container) -> dict[str, int]:
        return run_repair(c.sessions, c.store, pending_grace_s=c.settings.ingest_pending_grace_s,
                          actor=actor_id(actor))

    counts = run(data_dir, _do)
    if as_json:
        print_json(counts)
        return
    out.print(f"repaired: {counts['abandoned']} pending ingests undone, {counts['synced']} versions synced, "
              f"{counts['republished']} sources' access republished, "
              f"{counts['retractions_resynced']} retractions resynced", markup=False, soft_wrap=True)


@app.command("backfill-twins")
def backfill_twins_cmd(
    data_dir: DataDir = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Chunks per batch (one embedding call, one "
                                       "vector upsert and one SQL transaction each).")] = 256,
    actor: Actor = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Embed and store the masked twin of every chunk with personal data stored without one (before masked
    twins existed): until then such a chunk is not served to callers who read its source masked. Idempotent;
    the twin is stored before SQL names it, so an interrupted run is finished by the next (audited when it
    stored any). Safe while the API runs on PostgreSQL + Qdrant server; on the embedded store, stop the API."""
    def _do(c: Container) -> dict[str, int]:
        return c.backfill_twins(actor=actor_id(actor), batch=batch)

    counts = run(data_dir, _do)
    if as_json:
        print_json(counts)
        return
    out.print(f"masked twins: {counts['stored']} stored ({counts['embedded']} texts embedded), {counts['lacking']} "
              f"personal chunks still without one ({counts['other_model']} of another embedding model, "
              f"{counts['point_missing']} without their point, {counts['unsettled']} changing meanwhile)",
              markup=False, soft_wrap=True)


@app.command("relabel")
def relabel_cmd(
    data_dir: DataDir = None,
    source: Annotated[str | None, typer.Option("--source", help="Relabel this source's chunks only.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would change; write nothing.")] = False,
    actor: Actor = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Bring the chunks already stored to the label map in force and their sources' floors (a new label map or
    floor otherwise applies only to what is ingested next), in SQL and in the vectors, then store the masked
    twins of chunks that became personal. Audited; idempotent. Safe while the API runs on PostgreSQL + Qdrant
    server; on the embedded store, stop the API first or call `POST /v1/admin/relabel`."""

    def _do(c: Container) -> dict[str, object]:
        from memory.relabel import versions_to_examine

        with c.sessions() as s:
            total = versions_to_examine(s, source)
        with Progress(TextColumn("relabel"), BarColumn(), MofNCompleteColumn(), TextColumn("versions"),
                      TimeElapsedColumn(), console=out, transient=True, disable=as_json) as progress:
            task = progress.add_task("versions", total=total)
            return c.relabel(actor=actor_id(actor), source_id=source, dry_run=dry_run,
                             on_batch=lambda report: progress.update(task, completed=report.versions))

    counts = run(data_dir, _do)
    if as_json:
        print_json(counts)
        return
    would = "would relabel" if dry_run else "relabelled"
    out.print(f"{would} {counts['versions_relabelled']} of {counts['versions']} versions under label map "
              f"{counts['label_map_version']}: {counts['raised']} chunks raised, {counts['lowered']} lowered, "
              f"{counts['now_personal']} now personal, {counts['no_longer_personal']} no longer personal; "
              f"{counts['points_patched']} vector points written, {counts['twins_stored']} masked twins stored",
              markup=False, soft_wrap=True)


@app.command("rebuild-index")
def rebuild_index_cmd(
    data_dir: DataDir = None,
    drop_old: Annotated[bool, typer.Option("--drop-old", help="Delete the previous shard after the swap "
                                           "(default: keep it as <dir>.old-<UTC time> to roll back to).")] = False,
    actor: Actor = None,
) -> None:
    """Rebuild the embedded vector store under the current index tuning (run while the API is stopped).

    Index parameters such as the full-scan threshold are fixed when the index is built; `optimize` keeps
    them. This copies every point into a new shard, builds and checks it, then swaps it in."""
    from memory import audit
    from memory.stores.edge import EdgeVectorStore
    from memory.stores.edge_rebuild import rebuild

    def _do(c: Container) -> Any:
        if not c.settings.is_embedded_vectors:
            fail("not_embedded", "only the embedded store is rebuilt here; a Qdrant server re-indexes a collection "
                 "when its config is updated (Qdrant's update collection API)")
        store = c.store
        assert isinstance(store, EdgeVectorStore)  # what embedded settings build
        report = rebuild(store, tuning=c.edge_tuning, keep_old=not drop_old)
        with transaction(c.sessions) as s:
            audit.append(s, audit.Write(action="vectors.rebuild", target=report.path.name, details={
                "points": report.points, "seconds": round(report.seconds, 1), "kept_previous": not drop_old,
                "full_scan_threshold_points": {"before": list(report.thresholds_before),
                                               "after": list(report.thresholds_after)},
            }), principal_id=actor_id(actor))
        return report

    report = run(data_dir, _do)
    before, after = list(report.thresholds_before), list(report.thresholds_after)
    out.print(f"vector index rebuilt: {report.points} points in {report.seconds:.1f} s; full-scan threshold "
              f"{before} -> {after} points", markup=False, soft_wrap=True)
    if report.previous is not None:
        out.print(f"previous shard kept at {report.previous} (delete it once satisfied)", markup=False,
                  soft_wrap=True)


@policy_app.command("show")
def policy_show(data_dir: DataDir = None) -> None:
    """Print the jurisdiction transfer rules and label map in force."""
    from memory import policy_store

    def _do(c: Container) -> dict[str, Any]:
        with c.sessions() as s:
            rules = policy_store.transfer_rules(s)
            lm, v = policy_store.label_map(s)
            return {"jurisdictions": {"version": rules.version, "rules": rules.to_json()},
                    "labels": {"version": v, **lm.to_json()}}

    print_json(run(data_dir, _do))


def _policy_file(file: Path) -> Any:
    """The JSON a policy file holds (its shape is the policy store's to check); unreadable or not JSON: a
    non-zero exit with a one-line reason."""
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        fail("invalid_policy_file", str(exc))


@policy_app.command("set-jurisdictions")
def policy_set_jurisdictions(
    file: Annotated[Path, typer.Argument(
        help="JSON file: [{data, caller, rule}, ...], or {rules: [...]} as PUT /v1/policy/jurisdictions takes")],
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Replace the transfer rules with a new version (unlisted pairs are denied)."""
    from memory import policy_store

    rules = _policy_file(file)
    if isinstance(rules, dict) and set(rules) == {"rules"}:  # the API's body; anything else the store refuses
        rules = rules["rules"]

    def _do(c: Container) -> int:
        with transaction(c.sessions) as s:
            return policy_store.put_transfer_rules(s, rules=rules, actor=actor_id(actor)).version

    out.print(f"transfer rules now at version {run(data_dir, _do)}")


@policy_app.command("set-labels")
def policy_set_labels(
    file: Annotated[Path, typer.Argument(help="JSON file: {mapping: {ENTITY: label}, unmapped?, personal_types?}")],
    data_dir: DataDir = None,
    actor: Actor = None,
) -> None:
    """Put a new entity->label map version (as PUT /v1/policy/labels): it applies to the next ingest of new bytes
    in every process, a running API included."""
    from memory import policy_store

    body = _policy_file(file)

    def _do(c: Container) -> tuple[int, str]:
        with transaction(c.sessions) as s:
            label_map, version = policy_store.put_label_map(s, body=body, actor=actor_id(actor))
            return version, label_map.version

    version, label_map_version = run(data_dir, _do)
    out.print(f"label map now at version {version} ({label_map_version})")




@app.command("usage")
def usage_cmd(data_dir: DataDir = None) -> None:
    """Usage and cost per principal, team and source, and duplicate content across sources (JSON)."""
    from memory import usage

    def _do(c: Container) -> dict[str, Any]:
        with c.sessions() as s:
            r = usage.usage_report(s)
            return {"totals": r.totals, "by_principal": r.by_principal, "by_group": r.by_group,
                    "by_source": r.by_source, "duplicates": r.duplicates}

    print_json(run(data_dir, _do))
