"""pandoc under the parse worker: a heap limit that fails a file at once as document_too_complex, and no pandoc
left running when the worker is killed at a file's time budget."""

from __future__ import annotations

import os
import random
import threading
import time

import psutil
import pypandoc
import pytest

from ingest import pandoc
from ingest.errors import DocumentTooComplexError, IngestError, ParseTimeoutError
from ingest.types import ParsedDocument
from ingest.workers import InlineParser, ProcessParser, make_parser
from tests.ingest.test_ingest_pipeline import MAX

PANDOC = os.path.realpath(pypandoc.get_pandoc_path())
# pandoc's runtime is built with a 64 MiB suggested heap (-H64m): at a 64 MiB limit the first major collection
# finds no room, so a document of a few hundred KB fails in ~0.1 s; with 80 MiB it parses (measured).
SMALL_HEAP_MB = 64


def words_rst(paragraphs: int, *, seed: int = 7) -> bytes:
    """A .rst of random words, 200 to a paragraph (~1.8 KB each): what pandoc's memory and time grow with."""
    rng = random.Random(seed)
    text = "\n\n".join(" ".join(f"word{rng.randrange(10_000)}" for _ in range(200)) for _ in range(paragraphs))
    return ("Planning Review\n===============\n\n" + text + "\n").encode()


def parse_one(parser: ProcessParser | InlineParser, data: bytes, filename: str) -> ParsedDocument | IngestError:
    [(result, _)] = list(parser.parse_many([(data, filename)], max_bytes=MAX))
    return result


def test_a_document_over_the_heap_limit_fails_at_once_as_too_complex(capfd: pytest.CaptureFixture[str]) -> None:
    data = words_rst(150)  # ~270 KB: pandoc needs ~1 s and ~170 MiB RSS for it, unbounded

    with ProcessParser(timeout_s=60, pandoc_max_heap_mb=SMALL_HEAP_MB) as parser:
        parser.wait_ready()
        t0 = time.perf_counter()
        result = parse_one(parser, data, "notes.rst")
        elapsed = time.perf_counter() - t0

    assert isinstance(result, DocumentTooComplexError), result
    assert result.code == "document_too_complex"
    assert f"more memory than the limit of {SMALL_HEAP_MB} MB" in result.message
    assert elapsed < 10  # pandoc stops at the limit, well before it could have parsed the file
    err = capfd.readouterr().err
    assert f"pandoc heap exhausted: limit_mb={SMALL_HEAP_MB}" in err, err
    assert "Heap exhausted" not in err and "Planning Review" not in err  # neither pandoc's stderr nor the document


def test_the_same_document_parses_under_the_default_limit() -> None:
    data = words_rst(150)

    with ProcessParser(timeout_s=60) as parser:
        result = parse_one(parser, data, "notes.rst")

    assert isinstance(result, ParsedDocument), result
    assert result.text.startswith("Planning Review") and result.text.count("word") == 150 * 200


def test_the_in_process_path_runs_pandoc_under_its_limit_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pandoc.ENV, "-M4096m")  # an operator's own value, for any other GHC program

    result = parse_one(InlineParser(pandoc_max_heap_mb=SMALL_HEAP_MB), words_rst(150), "notes.rst")

    assert isinstance(result, DocumentTooComplexError), result
    assert os.environ[pandoc.ENV] == "-M4096m"  # put back once the parse is done


def test_a_heap_limit_below_one_mib_is_refused_where_the_parser_is_built() -> None:
    with pytest.raises(ValueError):
        make_parser(timeout_s=0, pandoc_max_heap_mb=0)
    with pytest.raises(ValueError):
        make_parser(timeout_s=5, pandoc_max_heap_mb=0)


@pytest.mark.parametrize(("message", "exhausted"), [
    ('Pandoc died with exitcode "251" during conversion: pandoc: Heap exhausted;\npandoc: Current maximum heap', True),
    ('Pandoc died with exitcode "64" during conversion: a document quoting "Heap exhausted"', False),
    ('Pandoc died with exitcode "251" during conversion: ', False),  # the status alone: not certainly the heap
    ("Heap exhausted", False),
])
def test_heap_exhaustion_is_told_by_pandocs_exit_status_and_words(message: str, exhausted: bool) -> None:
    assert pandoc.heap_exhausted(RuntimeError(message)) is exhausted


def test_heap_exhaustion_is_found_under_an_error_raised_from_it() -> None:
    try:
        try:
            raise RuntimeError('Pandoc died with exitcode "251" during conversion: pandoc: Heap exhausted;')
        except RuntimeError as err:
            raise ValueError("a library's own words") from err
    except ValueError as wrapped:
        assert pandoc.heap_exhausted(wrapped)


def test_a_worker_killed_at_its_budget_leaves_no_pandoc_running() -> None:
    data = words_rst(2_000)  # ~3.6 MB: pandoc alone takes ~12 s and ~360 MiB on it
    seen: dict[int, float] = {}  # pandoc processes under the worker: pid -> start time
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            for process in psutil.Process().children(recursive=True):
                try:
                    if process.exe() == PANDOC:
                        seen[process.pid] = process.create_time()
                except psutil.Error:
                    pass
            time.sleep(0.05)

    # A heap limit far above what this file needs: it is the time budget that stops it.
    with ProcessParser(timeout_s=3, pandoc_max_heap_mb=8192) as parser:
        parser.wait_ready()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = parse_one(parser, data, "big.rst")
        finally:
            watching.clear()
            watcher.join()
        try:
            assert isinstance(result, ParseTimeoutError), result
            assert seen, "pandoc never ran under the worker"
            deadline = time.monotonic() + 5
            while _running(seen) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _running(seen), "pandoc outlived its killed worker"
        finally:
            for pid in _running(seen):  # never leave one behind, even when the test fails
                psutil.Process(pid).kill()


def _running(seen: dict[int, float]) -> list[int]:
    """Those of `seen` still running (the same process: a reused pid has another start time; a zombie is done)."""
    alive = []
    for pid, started in seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_killing_the_children_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """It runs in a SIGTERM handler: an exception there would keep the worker from exiting."""
    from ingest import workers

    def unreadable(*_: object) -> psutil.Process:
        raise psutil.AccessDenied()

    monkeypatch.setattr(workers.psutil, "Process", unreadable)
    workers._kill_children()


def test_overlapping_parses_put_the_variable_back_once_both_are_done(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads share the environment: two parses that overlap, the first ending first, leave no limit behind (each
    putting back what it found left the first's value set for good: shellcheck then failed under it in CI)."""
    monkeypatch.delenv(pandoc.ENV, raising=False)
    first, second = pandoc.heap_limited(256), pandoc.heap_limited(512)
    first.__enter__()
    second.__enter__()
    assert os.environ[pandoc.ENV] == "-M256m"
    first.__exit__(None, None, None)
    assert os.environ[pandoc.ENV] == "-M256m"  # the second still runs
    second.__exit__(None, None, None)
    assert pandoc.ENV not in os.environ
