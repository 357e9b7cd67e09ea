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
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_MAX_HEAP_MB = 1024
ENV = "GHCRTS"
# pypandoc's words for a failed run, then the GHC runtime's exit status for a heap overflow.
_HEAP_EXHAUSTED_HEAD = 'Pandoc died with exitcode "251"'
_HEAP_EXHAUSTED_WORDS = "Heap exhausted"
_LIMIT = re.compile(r"^-M(\d+)m$")


@contextmanager
def heap_limited(max_heap_mb: int) -> Iterator[None]:
    """Inside: every pandoc this process starts stops past `max_heap_mb` MiB of heap. The variable is put back as
    it was on the way out, so no other program this process starts later (another GHC program: shellcheck, say)
    runs under it. The parse worker only parses; in the API process (parse budget 0) another thread's child
    started meanwhile inherits it too, which only a GHC program reads."""
    if max_heap_mb < 1:
        raise ValueError("max_heap_mb must be positive")
    previous = os.environ.get(ENV)
    os.environ[ENV] = f"-M{max_heap_mb}m"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous


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
