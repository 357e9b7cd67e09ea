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
