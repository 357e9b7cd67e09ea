"""The ingest pipeline's version, and which stored versions an ingest of the same bytes processes again.

Bumped whenever what the pipeline makes of the same bytes changes in a way governance reads (labels, personal
data, PII spans, masked texts); a classifier upgrade meant to reach stored documents is released with a bump.
ingest-2: the names shown beside a document's text (file name, key, URI, attachment names) are classified with
it, and their personal data masked wherever the text repeats it.
ingest-3: two attachments of one message with the same name are chunked apart (`notes (2).txt`), so one's
personal data no longer labels the other's text; a text file unstructured guessed was CSV is read as text, and a
CSV with ragged rows is kept as text instead of refused."""

from __future__ import annotations

PIPELINE_VERSION = "ingest-3"
_PREFIX = "ingest-"


def generation(version: str) -> int | None:
    """N of "ingest-N"; None for any other string."""
    digits = version[len(_PREFIX):]
    if not version.startswith(_PREFIX) or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits)


def older_pipeline(stored: str, current: str | None = None) -> bool:
    """Whether a version the pipeline `stored` processed predates `current` (default: this code's). Only an older
    generation counts: a process that runs an older pipeline (during a rolling upgrade) never processes again
    what a newer one stored, so two processes never take turns reclassifying a document; a string that is not
    a generation is never older."""
    old, new = generation(stored), generation(current or PIPELINE_VERSION)
    return old is not None and new is not None and old < new
