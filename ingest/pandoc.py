"""pandoc's heap limit, and telling pandoc stopped at that limit from a file it cannot read.

unstructured reads odt, epub, rst, org and rtf through pandoc (pypandoc's binary, a GHC program), run as a
child process with the parsing process's environment. Unbounded, pandoc takes what a document makes it want
(a 35 MB .rst of words: 2.5 GB and 107 s). The GHC runtime reads options from the GHCRTS variable: with
`-M<N>m` pandoc stops once its heap would pass N MiB, saying "Heap exhausted" with exit status 251, and pypandoc
raises that as a RuntimeError quoting pandoc's stderr (which unstructured re-raises with the same message first).
That message can quote the document: it is recognised here, never logged or shown.
"""

from __future__ import annotations

import os
import re

DEFAULT_MAX_HEAP_MB = 1024
ENV = "GHCRTS"
# pypandoc's words for a failed run, then the GHC runtime's exit status for a heap overflow.
_HEAP_EXHAUSTED_HEAD = 'Pandoc died with exitcode "251"'
_HEAP_EXHAUSTED_WORDS = "Heap exhausted"
_LIMIT = re.compile(r"^-M(\d+)m$")


def limit_heap(max_heap_mb: int) -> None:
    """Make every pandoc this process starts from now on stop past `max_heap_mb` MiB of heap."""
    if max_heap_mb < 1:
        raise ValueError("max_heap_mb must be positive")
    value = f"-M{max_heap_mb}m"
    if os.environ.get(ENV) != value:  # written on a change only: one write per process, not one per file
        os.environ[ENV] = value


def heap_limit_mb() -> int | None:
    """The heap limit, in MiB, the pandoc started from this process runs under (None: none set here)."""
    found = _LIMIT.match(os.environ.get(ENV, ""))
    return int(found[1]) if found else None


def heap_exhausted(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from or during, is pandoc stopped at its heap limit."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        message = str(current) if isinstance(current, RuntimeError) else ""
        # Both: the exit status heads the message (pypandoc's text, not the document's), and the runtime's words.
        if message.startswith(_HEAP_EXHAUSTED_HEAD) and _HEAP_EXHAUSTED_WORDS in message:
            return True
        current = current.__cause__ or current.__context__
    return False
