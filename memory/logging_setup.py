"""Structured logging: JSON lines with a request id and, when traced, the trace id; never document text or PII
(ids, hashes, counts).

A logged exception keeps its traceback (the frames: file, line, function, source line) and its type, never its
message: an exception's text is written by whatever raised it (a driver quoting a statement's values, a parser
quoting the document, a library echoing its input). uvicorn's own lines go through the same handler
(memory.api.serving: no log config of its own), its "Exception in ASGI application" included."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import traceback
from types import TracebackType

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_STATE = "memory.request_id"  # where an API request's id is also left (its ASGI scope's state)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "asyncio" and record.exc_info:
            # The loop's own report ("Task exception was never retrieved") names the exception with its repr, i.e.
            # its message, on the lines after the first: only the first is kept (the traceback follows, redacted).
            record.msg, record.args = record.getMessage().split("\n", 1)[0], ()
        record.request_id = request_id.get()
        # The trace the line belongs to, when the request is traced (memory.tracing): logs and traces correlate.
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else "-"
        return True


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def traceback_without_messages(ei: ExcInfo) -> str:
    """The exception's traceback as Python prints it, its causes and contexts included, with every exception's
    message left out (its type and where it was raised stay)."""
    _, exc, _ = ei
    if exc is None:
        return ""
    lines: list[str] = []
    seen: set[int] = set()

    def add(e: BaseException) -> None:
        seen.add(id(e))
        if e.__cause__ is not None and id(e.__cause__) not in seen:
            add(e.__cause__)
            lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
        elif e.__context__ is not None and not e.__suppress_context__ and id(e.__context__) not in seen:
            add(e.__context__)
            lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
        if e.__traceback__ is not None:
            lines.append("Traceback (most recent call last):\n")
            lines.extend(traceback.format_tb(e.__traceback__))
        kind = type(e)
        module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
        lines.append(f"{module}{kind.__qualname__} (message not logged)\n")

    add(exc)
    return "".join(lines).rstrip("\n")


class _NoMessagesJsonFormatter(JsonFormatter):
    def formatException(self, ei: ExcInfo) -> str:  # type: ignore[override]
        return traceback_without_messages(ei)


class _NoMessagesFormatter(logging.Formatter):
    def formatException(self, ei: ExcInfo) -> str:  # type: ignore[override]
        return traceback_without_messages(ei)


def configure(level: str = "INFO", json_logs: bool = True, *, access_log: bool = False) -> None:
    """One handler on the root logger for every line, uvicorn's included. `access_log`: uvicorn's access lines
    are written whatever the level (its own log config pinned them at INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if json_logs:
        handler.setFormatter(_NoMessagesJsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(trace_id)s"))
    else:
        handler.setFormatter(_NoMessagesFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "urllib3", "presidio-analyzer", "sentence_transformers", "unstructured"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    threading.excepthook = _log_thread_exception  # its default prints the message to stderr


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("memory.threads").error(
        "thread.unhandled thread=%s error=%s", args.thread.name if args.thread else "-", args.exc_type.__name__,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback) if args.exc_value is not None else None)
