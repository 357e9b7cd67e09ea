"""Structured logging: JSON lines with a request id and, when traced, the trace id; never document text or PII
(ids, hashes, counts).

A logged exception keeps its traceback (the frames: file, line, function, source line) and its type, never its
message: an exception's text is written by whatever raised it (a driver quoting a statement's values, a parser
quoting the document, a library echoing its input). A Python warning is logged the same way: its category and the
module and line that warned, never its message (ingest.log_redaction). uvicorn's own lines go through the same handler
(memory.api.serving: no log config of its own), its "Exception in ASGI application" included."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from ingest.log_redaction import (
    ExcInfo,
    NoMessagesFormatter,
    log_warnings_without_messages,
    quiet_parser_loggers,
    traceback_without_messages,
)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_STATE = "memory.request_id"  # where an API request's id is also left (its ASGI scope's state)
ACCESS_LOGGER = "memory.access"  # one line per request (memory.api.app.RequestContextMiddleware)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "asyncio" and record.exc_info:
            # The loop's own report ("Task exception was never retrieved") names the exception with its repr, i.e.
            # its message, on the lines after the first: only the first is kept (the traceback follows, redacted).
            record.msg, record.args = record.getMessage().split("\n", 1)[0], ()
        record.__dict__.pop("color_message", None)  # uvicorn's terminal copy of the message (ANSI escapes)
        record.request_id = request_id.get()
        # The trace the line belongs to, when the request is traced (memory.tracing): logs and traces correlate.
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else "-"
        return True


class _NoMessagesJsonFormatter(JsonFormatter):
    def formatException(self, ei: ExcInfo) -> str:  # type: ignore[override]
        return traceback_without_messages(ei)


def configure(level: str = "INFO", json_logs: bool = True, *, access_log: bool = False) -> None:
    """One handler on the root logger for every line, uvicorn's included. `access_log`: the access lines
    (ACCESS_LOGGER) are written whatever the level; off, never."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if json_logs:
        handler.setFormatter(_NoMessagesJsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(trace_id)s"))
    else:
        handler.setFormatter(NoMessagesFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    quiet_parser_loggers(handler)  # when the API parses in process (MEMORY_PARSE_TIMEOUT_S=0)
    log_warnings_without_messages(handler)  # the libraries' warnings.warn, which would print their text
    for noisy in ("httpx", "urllib3", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access_log else logging.CRITICAL + 1)
    threading.excepthook = _log_thread_exception  # its default prints the message to stderr


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("memory.threads").error(
        "thread.unhandled thread=%s error=%s", args.thread.name if args.thread else "-", args.exc_type.__name__,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback) if args.exc_value is not None else None)
