"""Where parsing runs: in this process, or in a worker process with a per-file time budget.

Python threads cannot be stopped, so a parser that hangs on a pathological file can only be bounded by a
process that can be killed. `ProcessParser` keeps one worker process (a pebble ProcessPool of one) that loads
unstructured once and parses every file it is given; a file that runs past `timeout_s` gets
ParseTimeoutError (`parse_timeout`), pebble kills that worker (SIGTERM, then SIGKILL) and starts a fresh one
for the next file, and the rest of the batch goes on. A worker that dies under a file (a crash in a native
library, an OOM kill) gets that file a CorruptDocumentError and is replaced the same way. A worker stopped by
SIGTERM kills its child processes first (pandoc, LibreOffice): they would otherwise run on, orphaned.

The worker is spawned, never forked: the parent holds torch, tokenizer and database threads, and a fork
copies their locks in whatever state they are in. It runs the same offline guards as the in-process path
(`ensure_parser_offline()` when it starts, `no_network()` around every parse) and keeps torch out: spaCy's
thinc would import it only to offer it as a backend, which unstructured's sentence splitting never uses.

`InlineParser` is the in-process path (no time budget, no process), used when the budget is 0.

Both pass the pandoc heap limit to every parse (ingest.pandoc), so pandoc runs under it in either path.

Both take the files of a batch together (`parse_many`), so the worker parses file n+1 while the caller
chunks file n.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import psutil

from ingest.attachments import AttachmentLimits
from ingest.errors import (
    CorruptDocumentError,
    DocumentTooComplexError,
    IngestError,
    ParserUnavailableError,
    ParseTimeoutError,
)
from ingest.log_redaction import NoMessagesFormatter, log_warnings_without_messages, quiet_parser_loggers
from ingest.pandoc import DEFAULT_MAX_HEAP_MB
from ingest.types import ParsedDocument

logger = logging.getLogger(__name__)

CONVERT_SHARE = 0.8  # of the per-file budget, for one LibreOffice conversion
REAP_WAIT_S = 1.0  # for the children killed at a SIGTERM to be reaped (SIGKILL ends them within milliseconds)
ParseFunction = Callable[..., ParsedDocument]  # parse_document's signature: (data, filename, *, max_bytes, ...)
# One file's outcome and the seconds its parse took where it ran (IPC and queueing excluded).
ParseResult = tuple[ParsedDocument | IngestError, float]


class Parser(Protocol):
    """What the pipeline needs: each file's ParsedDocument or the IngestError it raised, in order."""

    def parse_many(self, files: Iterable[tuple[bytes, str]], *, max_bytes: int) -> Iterator[ParseResult]: ...

    def start(self) -> None: ...

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the parser can take a file at full speed (the worker has loaded its libraries)."""
        ...

    def close(self) -> None: ...


class InlineParser:
    """Parses in the calling process: no time budget, no extra process."""

    def __init__(
        self,
        *,
        attachment_limits: AttachmentLimits | None = None,
        pandoc_max_heap_mb: int = DEFAULT_MAX_HEAP_MB,
        target: ParseFunction | None = None,
    ) -> None:
        self._limits = attachment_limits
        self._pandoc_max_heap_mb = _positive_heap(pandoc_max_heap_mb)
        self._target = target

    def parse_many(self, files: Iterable[tuple[bytes, str]], *, max_bytes: int) -> Iterator[ParseResult]:
        for data, filename in files:
            kwargs = {"max_bytes": max_bytes, "attachment_limits": self._limits,
                      "pandoc_max_heap_mb": self._pandoc_max_heap_mb}
            yield _timed(self._target, data, filename, kwargs)

    def start(self) -> None:
        pass

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        pass

    def close(self) -> None:
        pass


class ProcessParser:
    """Parses in one reusable worker process; a file that takes longer than `timeout_s` is killed.

    `target` must be a module-level function (it is pickled by reference); tests pass one that hangs.
    Thread-safe: files from concurrent callers queue for the one worker (each budget starts when its
    file does). The worker starts on `start()` or first use; `close()` stops it."""

    def __init__(
        self,
        *,
        timeout_s: float,
        attachment_limits: AttachmentLimits | None = None,
        pandoc_max_heap_mb: int = DEFAULT_MAX_HEAP_MB,
        target: ParseFunction | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive (use InlineParser for no time budget)")
        self.timeout_s = timeout_s
        self._limits = attachment_limits
        self._pandoc_max_heap_mb = _positive_heap(pandoc_max_heap_mb)
        self._target = target
        self._pool: Any = None
        self._ready: concurrent.futures.Future[Any] | None = None
        self._lock = threading.Lock()

    def parse_many(self, files: Iterable[tuple[bytes, str]], *, max_bytes: int) -> Iterator[ParseResult]:
        pending: concurrent.futures.Future[ParseResult] | None = None
        for data, filename in files:
            scheduled = self._schedule(data, filename, max_bytes)
            if pending is not None:
                yield self._result(pending)
            pending = scheduled  # one file ahead: the worker parses it while the caller uses the last result
        if pending is not None:
            yield self._result(pending)

    def start(self) -> None:
        """Start the worker now, without waiting for it (it loads unstructured while the caller does other work)."""
        self._ready = self._ensure_pool().schedule(_ready)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the worker has loaded unstructured (a server is ready only then: a worker still
        loading competes for the cores with the first searches). Starts it if needed."""
        if self._ready is None:
            self.start()
        assert self._ready is not None
        self._ready.result(timeout=timeout_s)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # kills a worker still busy
            pool.join()

    def __enter__(self) -> ProcessParser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                from pebble import ProcessPool

                from ingest.offline import ensure_offline

                ensure_offline()  # the worker inherits this environment
                self._pool = ProcessPool(
                    max_workers=1, initializer=_init_worker, context=multiprocessing.get_context("spawn")
                )
            return self._pool

    def _schedule(self, data: bytes, filename: str, max_bytes: int) -> concurrent.futures.Future[ParseResult]:
        # A LibreOffice conversion gets most of the budget and is stopped (its process tree killed) before the
        # worker's own budget runs out, so the worker is not killed around it (ingest.legacy_office).
        kwargs = {"max_bytes": max_bytes, "attachment_limits": self._limits,
                  "convert_timeout_s": CONVERT_SHARE * self.timeout_s, "pandoc_max_heap_mb": self._pandoc_max_heap_mb}
        future: concurrent.futures.Future[ParseResult] = self._ensure_pool().schedule(
            _timed, args=(self._target, data, filename, kwargs), timeout=self.timeout_s
        )
        return future

    def _result(self, future: concurrent.futures.Future[ParseResult]) -> ParseResult:
        from pebble import ProcessExpired

        try:
            # No wait limit here: pebble enforces the budget from the moment the worker takes the file, so a
            # file queued behind others (concurrent callers) is not cut short by its time in the queue.
            return future.result()
        except TimeoutError:  # pebble's: the worker was killed and is being replaced
            logger.info("parse timeout: budget_s=%s", self.timeout_s)
            return ParseTimeoutError(f"parsing took longer than the limit of {self.timeout_s:g} s"), self.timeout_s
        except ProcessExpired as exc:
            logger.warning("parse worker died: exitcode=%s", exc.exitcode)
            error = CorruptDocumentError(f"the parser process died while reading the file (exit code {exc.exitcode})")
            return error, 0.0
        except concurrent.futures.BrokenExecutor:
            self.close()  # the next file starts a new pool
            raise


def make_parser(
    *, timeout_s: float, attachment_limits: AttachmentLimits | None = None,
    pandoc_max_heap_mb: int = DEFAULT_MAX_HEAP_MB,
) -> Parser:
    """A ProcessParser with this per-file budget, or an InlineParser when the budget is 0 (disabled); pandoc runs
    under `pandoc_max_heap_mb` MiB of heap in either."""
    if timeout_s > 0:
        return ProcessParser(
            timeout_s=timeout_s, attachment_limits=attachment_limits, pandoc_max_heap_mb=pandoc_max_heap_mb
        )
    return InlineParser(attachment_limits=attachment_limits, pandoc_max_heap_mb=pandoc_max_heap_mb)


def _positive_heap(max_heap_mb: int) -> int:
    # Refused here, where the parser is built: in the worker it would fail every file instead.
    if max_heap_mb < 1:
        raise ValueError("pandoc_max_heap_mb must be positive")
    return max_heap_mb


def _parse_document() -> ParseFunction:
    from ingest.parse import parse_document

    return parse_document


def _init_worker() -> None:
    """Runs once in each new worker: offline guards, then every parser a file may need.

    Loading all of them now (~1.3 s, ~200 MiB more than text alone) keeps a first PDF's import time out
    of that file's budget and the worker's memory flat from the start."""
    # thinc (under spaCy) imports torch when it is installed, only to offer it as a backend: ~4 s and
    # ~290 MiB per worker for nothing. A None entry makes `import torch` fail, so thinc goes without.
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    # spaCy loads its plugins' entry points, Presidio's among them, which imports transformers; without torch
    # it would say so on stderr at every worker start.
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    handler = logging.StreamHandler()  # stderr, as the service's own lines
    handler.setFormatter(NoMessagesFormatter("%(levelname)s %(name)s [parse worker] %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    quiet_parser_loggers(handler)
    log_warnings_without_messages(handler)  # before the parsers load: some warn as they import
    _stop_conversions_on_term()
    try:  # never raise: pebble would restart a worker whose initializer fails, forever, with files waiting
        from ingest.offline import ensure_parser_offline

        ensure_parser_offline()  # before anything else of unstructured loads
        from unstructured.file_utils import filetype  # noqa: F401
        from unstructured.nlp.tokenize import _get_nlp

        from ingest.formats import ROUTES

        for module in sorted({route.module for route in ROUTES.values()}):
            importlib.import_module(f"unstructured.partition.{module}")
        _get_nlp()  # unstructured's spaCy sentence splitter, loaded from the installed package
    except Exception as exc:  # a broken install: each parse then reports it, rather than a worker that never starts
        logger.error("parse worker preload failed: error=%s", type(exc).__name__)
    logger.debug("parse worker ready: pid=%d", os.getpid())


def _stop_conversions_on_term() -> None:
    """A worker stopped mid-file (pebble's SIGTERM at a timeout or a shutdown exits at once, unwinding nothing)
    first kills its LibreOffice conversion and removes its directory, then kills every other process it started
    (pandoc, which runs on orphaned otherwise: minutes and gigabytes); and a new worker removes what a worker
    killed outright left behind (ingest.legacy_office)."""
    from ingest import legacy_office

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        try:
            legacy_office.abandon_active()
        except Exception:  # a signal handler must not raise, and the children are still to be killed
            pass
        _kill_children()
        if callable(previous):
            previous(signum, frame)
        else:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        legacy_office.sweep_stale()
    except OSError as exc:  # never stop a worker from starting
        logger.warning("soffice leftovers not swept: error=%s", type(exc).__name__)


def _kill_children() -> None:
    """SIGKILL every process this one started, their children too, and reap its own (for a SIGTERM handler:
    never raises). Reaped here because an orphan's zombie stays until PID 1 reaps it, and in a container PID 1 may
    be the service itself, which never does."""
    try:
        me = psutil.Process()
        direct = me.children()
        everyone = me.children(recursive=True)
    except Exception:  # psutil cannot read /proc: nothing more can be done from here
        return
    for child in everyone:
        try:
            child.kill()
        except Exception:  # already gone, or not ours to kill
            pass
    try:
        psutil.wait_procs(direct, timeout=REAP_WAIT_S)
    except Exception:
        pass


def _ready() -> None:
    """A no-op task: scheduling it makes the pool start its worker."""


def _timed(target: ParseFunction | None, data: bytes, filename: str, kwargs: dict[str, Any]) -> ParseResult:
    """Parse one file inside the network guard (in the worker, or inline): its result and the seconds taken."""
    from ingest.offline import ensure_parser_offline, no_network

    t0 = time.perf_counter()
    ensure_parser_offline()
    try:
        with no_network():
            result: ParsedDocument | IngestError = (target or _parse_document())(data, filename, **kwargs)
    except IngestError as exc:
        result = exc
    except (MemoryError, RecursionError) as exc:  # the file is too big or deep for the parser, not broken
        logger.warning("parse exhausted the parser: error=%s", type(exc).__name__)
        result = DocumentTooComplexError(f"the file is too large or too deeply nested to parse ({type(exc).__name__})")
    except ImportError as exc:  # a broken install fails every file alike: say so, not that the file is corrupt
        logger.error("parser unavailable: error=%s", type(exc).__name__)
        result = ParserUnavailableError(f"the parser could not run here ({type(exc).__name__}); the file was not read")
    except Exception as exc:  # a parser bug on this file: it fails alone, the batch goes on
        # The type only: a parser's message can quote the document.
        logger.warning("parse failed unexpectedly: error=%s", type(exc).__name__)
        result = CorruptDocumentError(f"the parser failed on this file ({type(exc).__name__})")
    return result, time.perf_counter() - t0
