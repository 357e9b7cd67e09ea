"""The parse worker process: a per-file time budget that kills a hung parser, a replacement worker, the
offline guards inside the worker, and the in-process path when the budget is 0."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from classifiers.types import Label
from ingest.errors import (
    CorruptDocumentError,
    DocumentTooComplexError,
    IngestError,
    ParserUnavailableError,
    ParseTimeoutError,
)
from ingest.parse import parse_document
from ingest.pipeline import IngestItem, IngestPipeline
from ingest.types import ParsedDocument, ParsedElement
from ingest.workers import InlineParser, ProcessParser, make_parser
from tests.ingest.test_ingest_pipeline import MAX, FakeClassifier, FakeEmbedder

BUDGET_S = 2.0
GOOD = b"The vendor contract renewal is due in March. Please review the terms."


def _doc(text: str) -> ParsedDocument:
    return ParsedDocument((ParsedElement(text, "NarrativeText", 0, len(text)),), text, "text/plain", "test")


def stand_in_parser(data: bytes, filename: str, **kwargs: Any) -> ParsedDocument:
    """Runs in the worker (pickled by reference): misbehaves on cue, else the real parse_document."""
    if filename == "hang.txt":
        time.sleep(3600)  # a parser stuck in a loop
    if filename == "crash.txt":
        os._exit(3)  # a native library taking the process down
    if filename == "pid.txt":
        return _doc(str(os.getpid()))
    if filename == "probe.txt":
        return _doc(_offline_probe())
    if filename == "bug.txt":
        raise ValueError("a parser bug quoting the document: TOP-SECRET")
    if filename == "deep.txt":
        raise RecursionError("maximum recursion depth exceeded")
    if filename == "huge.txt":
        raise MemoryError()
    if filename == "broken.txt":
        raise ModuleNotFoundError("No module named 'docx'")
    if filename == "logs.txt":  # a library logging what it caught, message and all
        try:
            raise ValueError("quoting the document: " + "-".join(("TOP", "SECRET")))  # (not on the source line)
        except ValueError:
            logging.getLogger("some.library").warning("could not read a part", exc_info=True)
        return _doc("read anyway")
    if filename == "warns.txt":  # a library warning about what it read (openpyxl quotes a cell, pypdf an object)
        warnings.warn("quoting the document: " + "-".join(("TOP", "SECRET")), UserWarning, stacklevel=1)
        return _doc("read anyway")
    return parse_document(data, filename, **kwargs)


def _offline_probe() -> str:
    from unstructured.nlp import tokenize

    from ingest.offline import NetworkBlockedError, _load_installed_spacy_model, network_guard_active

    try:
        socket.create_connection(("203.0.113.7", 443), timeout=1)  # TEST-NET-3: never routed
        outcome = "connected"
    except NetworkBlockedError:
        outcome = "blocked"
    except OSError as exc:
        outcome = type(exc).__name__
    facts = {
        "guard": network_guard_active(),
        "connect": outcome,
        "hf_offline": os.environ.get("HF_HUB_OFFLINE"),
        "spacy_offline": tokenize._load_spacy_model is _load_installed_spacy_model,
        "torch_loaded": sys.modules.get("torch") is not None,
    }
    return " ".join(f"{k}={v}" for k, v in facts.items())


@pytest.fixture(scope="module")
def worker() -> Iterator[ProcessParser]:
    """One worker for the module: it starts once (unstructured and spaCy load in a few seconds)."""
    with ProcessParser(timeout_s=BUDGET_S, target=stand_in_parser) as parser:
        yield parser


def parse_all(parser: Any, *files: tuple[bytes, str]) -> list[ParsedDocument | IngestError]:
    return [result for result, _ in parser.parse_many(files, max_bytes=MAX)]


def test_a_hung_parse_times_out_its_file_only_and_the_worker_is_replaced(worker: ProcessParser) -> None:
    [before] = parse_all(worker, (b"x", "pid.txt"))
    assert isinstance(before, ParsedDocument)

    t0 = time.perf_counter()
    results = parse_all(worker, (GOOD, "a.txt"), (b"x", "hang.txt"), (GOOD, "b.txt"), (b"x", "pid.txt"))
    elapsed = time.perf_counter() - t0

    assert [type(r) for r in results] == [ParsedDocument, ParseTimeoutError, ParsedDocument, ParsedDocument]
    assert isinstance(results[1], IngestError) and results[1].code == "parse_timeout"
    assert isinstance(results[3], ParsedDocument) and results[3].text != before.text  # a new worker process
    assert elapsed < BUDGET_S + 60  # killed at the budget, not after the hour the parser wanted


def test_the_worker_is_reused_across_files(worker: ProcessParser) -> None:
    results = parse_all(worker, (b"x", "pid.txt"), (GOOD, "a.txt"), (b"x", "pid.txt"))

    assert isinstance(results[0], ParsedDocument) and isinstance(results[2], ParsedDocument)
    assert results[0].text == results[2].text


def test_a_worker_that_dies_fails_its_file_as_corrupt_and_is_replaced(worker: ProcessParser) -> None:
    results = parse_all(worker, (b"x", "crash.txt"), (GOOD, "a.txt"))

    assert isinstance(results[0], CorruptDocumentError)
    assert isinstance(results[1], ParsedDocument)


def test_the_worker_runs_the_offline_guards(worker: ProcessParser) -> None:
    [probe] = parse_all(worker, (b"x", "probe.txt"))

    assert isinstance(probe, ParsedDocument)
    assert probe.text == "guard=True connect=blocked hf_offline=1 spacy_offline=True torch_loaded=False"


def test_worker_and_in_process_parses_agree(worker: ProcessParser, read_fixture: Any) -> None:
    names = ["report.docx", "report.pdf", "mail.eml", "notes.md", "corrupt.docx", "encrypted.pdf", "sound.wav"]
    files = [(read_fixture(n), n) for n in names]

    in_worker = parse_all(worker, *files)
    inline = parse_all(InlineParser(), *files)

    for a, b in zip(in_worker, inline, strict=True):
        assert type(a) is type(b)
        assert a == b if isinstance(a, ParsedDocument) else a.code == b.code  # type: ignore[union-attr]


def test_the_pipeline_ingests_the_other_files_when_one_times_out(worker: ProcessParser) -> None:
    pipeline = IngestPipeline(FakeClassifier(), FakeEmbedder(), None, max_bytes=MAX, parser=worker)
    items = [
        IngestItem(GOOD, "a.txt", Label.INTERNAL),
        IngestItem(b"x", "hang.txt", Label.INTERNAL),
        IngestItem(GOOD + b" Again.", "b.txt", Label.INTERNAL),
    ]

    results = pipeline.process_many(items)

    assert isinstance(results[1], ParseTimeoutError)
    assert [len(r.chunks) for r in results if not isinstance(r, IngestError)] == [1, 1]
    assert all(r.timings_s["parse"] < BUDGET_S for r in results if not isinstance(r, IngestError))


def test_budget_zero_parses_in_process() -> None:
    assert isinstance(make_parser(timeout_s=0), InlineParser)
    assert isinstance(make_parser(timeout_s=5), ProcessParser)
    with pytest.raises(ValueError):
        ProcessParser(timeout_s=0)


@pytest.mark.parametrize("where", ["inline", "worker"])
def test_a_parser_bug_fails_its_file_alone(where: str) -> None:
    """An exception that is no IngestError (a parser's bug) is that file's corrupt_document, without its
    message (which can quote the document); the files after it are parsed."""
    files = [(b"x", "bug.txt"), (b"Travel is booked through the desk.", "ok.txt")]
    if where == "inline":
        results = list(InlineParser(target=stand_in_parser).parse_many(files, max_bytes=MAX))
    else:
        with ProcessParser(timeout_s=BUDGET_S, target=stand_in_parser) as parser:
            results = list(parser.parse_many(files, max_bytes=MAX))
    (bug, _), (ok, _) = results
    assert isinstance(bug, CorruptDocumentError) and "ValueError" in bug.message and "TOP-SECRET" not in bug.message
    assert "Travel is booked" in ok.text  # type: ignore[union-attr]


@pytest.mark.parametrize("where", ["inline", "worker"])
def test_an_exhausted_parser_or_a_broken_install_is_not_a_corrupt_file(where: str) -> None:
    """Memory or recursion exhausted: the file is too complex to parse (document_too_complex); a module that does
    not import: the parser is unavailable (parser_unavailable, the service's fault: 503 on upload)."""
    files = [(b"x", "deep.txt"), (b"x", "huge.txt"), (b"x", "broken.txt")]
    if where == "inline":
        results = list(InlineParser(target=stand_in_parser).parse_many(files, max_bytes=MAX))
    else:
        with ProcessParser(timeout_s=BUDGET_S, target=stand_in_parser) as parser:
            results = list(parser.parse_many(files, max_bytes=MAX))
    (deep, _), (huge, _), (broken, _) = results
    assert isinstance(deep, DocumentTooComplexError) and "RecursionError" in deep.message
    assert isinstance(huge, DocumentTooComplexError) and "MemoryError" in huge.message
    assert isinstance(broken, ParserUnavailableError) and broken.http_status == 503
    assert "docx" not in broken.message  # the type only, as for any parser failure


@pytest.mark.parametrize(("raised", "expected"), [
    (RecursionError("maximum recursion depth exceeded"), DocumentTooComplexError),
    (MemoryError(), DocumentTooComplexError),
    (ModuleNotFoundError("No module named 'docx'"), ParserUnavailableError),
    (ValueError("a parser bug"), CorruptDocumentError),
])
def test_the_real_parse_path_tells_exhausted_and_broken_parsers_from_corrupt_files(
        monkeypatch: pytest.MonkeyPatch, raised: BaseException, expected: type[IngestError]) -> None:
    """Through parse_document and its partition step (which turns a parser's own errors into corrupt_document):
    an exhausted parser or a broken install still comes out as what it is."""
    import unstructured.partition.text as partition_text_module

    def failing(**_: Any) -> list[Any]:
        raise raised

    monkeypatch.setattr(partition_text_module, "partition_text", failing)
    [(result, _)] = list(InlineParser().parse_many([(b"Travel is booked through the desk.", "a.txt")],
                                                   max_bytes=MAX))
    assert type(result) is expected, result


def test_the_worker_logs_exceptions_and_warnings_without_their_messages(capfd: pytest.CaptureFixture[str]) -> None:
    with ProcessParser(timeout_s=BUDGET_S, target=stand_in_parser) as parser:
        docs = [doc for doc, _ in parser.parse_many([(b"x", "logs.txt"), (b"x", "warns.txt")], max_bytes=MAX)]
    assert [doc.text for doc in docs] == ["read anyway", "read anyway"]  # type: ignore[union-attr]
    err = capfd.readouterr().err
    assert "could not read a part" in err and "ValueError (message not logged)" in err, err
    # shown by the worker's default warnings filters (the suite's "error" filter is the test process's), and logged
    assert "WARNING py.warnings [parse worker] warning category=UserWarning module=tests.ingest.test_ingest_workers " \
           "lineno=" in err, err
    assert "TOP-SECRET" not in err
