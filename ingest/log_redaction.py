"""Logged exceptions and Python warnings without their messages, for every process that logs (the service:
memory.logging_setup; the parse worker: ingest.workers): an exception's or a warning's text is written by whatever
raised it (a driver quoting a statement's values, a parser quoting the document, a library echoing its input), so a
log line keeps where it was raised and its type, never that text."""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from types import TracebackType
from typing import TextIO

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
        lines.append(f"{_type_name(type(e))} (message not logged)\n")

    add(exc)
    return "".join(lines).rstrip("\n")


def _type_name(kind: type) -> str:
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


class NoMessagesFormatter(logging.Formatter):
    """A text formatter whose exceptions come without their messages (`traceback_without_messages`)."""

    def formatException(self, ei: ExcInfo) -> str:  # type: ignore[override]
        return traceback_without_messages(ei)


# The loggers of the libraries that read documents. Their messages quote what they read: pandoc's warnings name
# the text they could not convert, pdfminer's debug lines carry the page's tokens. Their records keep their level,
# logger and traceback; the message is replaced (`ParserRecordsRedacted`).
PARSER_LOGGERS = ("pypandoc", "pdfminer", "pikepdf", "pypdf", "unstructured", "unstructured_inference", "docx",
                  "pptx", "openpyxl", "xlrd", "msoffcrypto", "oxmsg", "lxml", "bs4", "markdown", "PIL",
                  "matplotlib", "pandas", "presidio-analyzer", "spacy")


def _is_parser(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PARSER_LOGGERS)


class ParserRecordsRedacted(logging.Filter):
    """A handler filter: a record from a parser library (PARSER_LOGGERS, their children included) is written with
    its level and logger, never its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_parser(record.name):
            record.msg = f"{record.name}: {record.levelname.lower()} (message not logged: it may quote the document)"
            record.args = ()
        return True


def quiet_parser_loggers(handler: logging.Handler) -> None:
    """Route the parser libraries' records through `handler`'s redaction only: `handler` gets the filter, the
    libraries log at WARNING and above (their debug lines are the documents' tokens), and pypandoc gets a handler
    that writes nothing, so it does not add its own raw one (it adds a stderr handler to a logger without any)."""
    handler.addFilter(ParserRecordsRedacted())
    for name in PARSER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    pandoc = logging.getLogger("pypandoc")
    pandoc.handlers = [logging.NullHandler()]
    pandoc.propagate = True


WARNINGS_LOGGER = "py.warnings"  # the standard library's logger for warnings (logging.captureWarnings)
_WARNING_LINE = "warning category=%s module=%s lineno=%d"


def log_warnings_without_messages(handler: logging.Handler) -> None:
    """Route Python warnings (`warnings.warn`, from any library) to the `py.warnings` logger as one line each, with
    the warning's category and the module and line that warned, never its message; and have `handler` write any
    other record of that logger without its message (`WarningRecordsRedacted`).

    Call it when the process configures its logging, never at import: pytest swaps `warnings.showwarning` for
    each test and puts it back after; the warnings filters, which decide what is shown and what is an error, are
    left alone."""
    handler.addFilter(WarningRecordsRedacted())
    # Not logging.captureWarnings(True): its record's message is `warnings.formatwarning`'s text, the warning's
    # message included, as one preformatted string, with no category or place kept apart to log instead. (It is
    # also a no-op once on, even after pytest has put the previous hook back at the end of a test.)
    warnings.showwarning = _log_warning


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    # A `file` is ignored too (logging's own hook would write the full text there): the one a caller names is
    # nearly always stderr, where the log lines go.
    logging.getLogger(WARNINGS_LOGGER).warning(_WARNING_LINE, _type_name(category), _module_of(filename), lineno)


def _module_of(filename: str) -> str:
    """The module a warning came from (`openpyxl.reader.excel`), from its file under the longest sys.path entry
    holding it; the file name as given when none does (`<string>`)."""
    path = os.path.abspath(filename)
    roots = [root for root in map(os.path.abspath, sys.path) if path.startswith(root.rstrip(os.sep) + os.sep)]
    if not roots or not path.endswith(".py"):
        return filename
    relative = os.path.relpath(path[:-3], max(roots, key=len))
    return relative.replace(os.sep, ".").removesuffix(".__init__")


class WarningRecordsRedacted(logging.Filter):
    """A handler filter: a `py.warnings` record not written by `log_warnings_without_messages`' hook (logging's
    own, turned on by a library calling logging.captureWarnings: its message is the warning's full text) is
    written with its level and logger, never its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == WARNINGS_LOGGER and record.msg != _WARNING_LINE:
            record.msg = f"{WARNINGS_LOGGER}: warning (message not logged: it may quote the document)"
            record.args = ()
        return True
