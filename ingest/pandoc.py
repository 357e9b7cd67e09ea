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
import threading
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_MAX_HEAP_MB = 1024
ENV = "GHCRTS"
# pypandoc's words for a failed run, then the GHC runtime's exit status for a heap overflow.
_HEAP_EXHAUSTED_HEAD = 'Pandoc died with exitcode "251"'
_HEAP_EXHAUSTED_WORDS = "Heap exhausted"
_LIMIT = re.compile(r"^-M(\d+)m$")


class _Held:
    """The parses inside `heap_limited` now, and the variable's value before the first of them (threads of one
    process share its environment: each parse putting back what it found would leave the limit set whenever two
    overlap, the second finding the first's)."""

    lock = threading.Lock()
    count = 0
    previous: str | None = None


@contextmanager
def heap_limited(max_heap_mb: int) -> Iterator[None]:
    """Inside: every pandoc this process starts stops past `max_heap_mb` MiB of heap (overlapping parses: the
    first one's limit, the service's one setting). Once the last parse inside is done, the variable is put back
    as it was, so no other program this process starts later (another GHC program: shellcheck, say) runs under
    it. The parse worker only parses; in the API process (parse budget 0) another thread's child started
    meanwhile inherits it too, which only a GHC program reads."""
    if max_heap_mb < 1:
        raise ValueError("max_heap_mb must be positive")
    with _Held.lock:
        if _Held.count == 0:
            _Held.previous = os.environ.get(ENV)
            os.environ[ENV] = f"-M{max_heap_mb}m"
        _Held.count += 1
    try:
        yield
    finally:
        with _Held.lock:
            _Held.count -= 1
            if _Held.count == 0:
                if _Held.previous is None:
                    os.environ.pop(ENV, None)
                else:
                    os.environ[ENV] = _Held.previous


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
