"""Logged exceptions without their messages, for every process that logs (the service: memory.logging_setup; the
parse worker: ingest.workers): an exception's text is written by whatever raised it (a driver quoting a
statement's values, a parser quoting the document, a library echoing its input), so a log line keeps where it was
raised and its type, never that text."""

from __future__ import annotations

import logging
import traceback
from types import TracebackType

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
