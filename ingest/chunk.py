"""ParsedDocument -> ChunkDraft list: deterministic, structure-aware, bounded in embedding-model tokens.

The algorithm (version `CHUNKER_NAME`):
1. Every element becomes one or more *pieces*: an element that fits `max_tokens` is one piece; a longer
   one is split at sentence ends, a sentence that is still too long at whitespace, and a single
   overlong "word" (a hash, a URL, base64) at characters. Greedy packing, so pieces are as large as fit.
2. Pieces are packed greedily, in document order, into chunks of at most `max_tokens`. A Title element
   starts a new chunk (a section boundary, as in unstructured's chunk_by_title), so a heading travels
   with the text under it and not with the end of the previous section. So does the first piece of an
   email attachment: a chunk never mixes the body and an attachment, or two attachments, and carries the
   name of the attachment it comes from.
3. A chunk is the contiguous slice `doc.text[start:end]` from its first piece to its last, so its text,
   sha256 and offsets agree by construction, and citations can point back into the document.

Token counts are measured on the exact chunk text with the embedder's tokenizer (no special tokens), and taken
as at least one token per CHARS_PER_TOKEN characters: a WordPiece tokenizer reads any word longer than 100
characters as one unknown token, so a run without spaces (hex, base64, a megabyte of one letter) would otherwise
be one "token" however long, and one chunk past what the NER model reads (spaCy's one million characters).
Pure function of (document text, elements, tokenizer, max_tokens): same input, same chunks.

With `max_chunks`, chunking stops as soon as the document makes one chunk more than that (TooManyChunksError):
pieces are cut and packed lazily, in document order, so what a refused document costs is bounded by the limit,
not by its size (a 5 MB line of words made ~13,000 chunks in ~60 s on two cores; refused at 5,000 it stops at the
5,001st). A slice longer than `max_tokens` * CHARS_PER_TOKEN characters cannot fit and is never tokenized.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ingest.errors import TooManyChunksError
from ingest.types import ChunkDraft, ParsedDocument

CHUNKER_NAME = "structural-v2"  # v2: at least one token per CHARS_PER_TOKEN characters
CHARS_PER_TOKEN = 32  # prose runs 4-6 characters a token: this binds only on runs without spaces
DEFAULT_MAX_TOKENS = 200
_SECTION_TYPES = frozenset({"Title"})
# A sentence ends after terminal punctuation (plus closing quotes/brackets) followed by whitespace,
# or at a line break. Cut points are positions between units; units are then stripped.
_SENTENCE_END = re.compile(r"[.!?;…][\"'”’)\]]*\s+|\n+")
_WORD = re.compile(r"\S+")


def chunker_version(max_tokens: int = DEFAULT_MAX_TOKENS) -> str:
    """Provenance string: algorithm and the parameter that changes its output."""
    return f"{CHUNKER_NAME};max_tokens={max_tokens}"


@dataclass(frozen=True, slots=True)
class _Piece:
    start: int
    end: int
    element_type: str
    page_number: int | None
    attachment: str | None


def chunk_document(
    doc: ParsedDocument, *, count_tokens: Callable[[str], int], max_tokens: int = DEFAULT_MAX_TOKENS,
    max_chunks: int | None = None,
) -> list[ChunkDraft]:
    """Split `doc` into ordered chunks of at most `max_tokens` tokens each. `max_chunks`: TooManyChunksError as
    soon as the document makes more chunks than that (the rest of it is not chunked)."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    counter = _CachedCounter(count_tokens, max_tokens)
    text = doc.text
    pieces = (
        _Piece(start, end, element.element_type, element.page_number, element.attachment)
        for element in doc.elements
        for start, end in _fit(text, element.start, element.end, counter, max_tokens, level=0)
    )
    drafts: list[ChunkDraft] = []
    for ordinal, group in enumerate(_pack(text, pieces, counter, max_tokens)):
        if max_chunks is not None and ordinal >= max_chunks:
            raise TooManyChunksError(f"the document makes more chunks than the limit of {max_chunks} per document")
        drafts.append(_draft(text, group, ordinal, counter))
    return drafts


def _pack(text: str, pieces: Iterable[_Piece], counter: _CachedCounter, max_tokens: int) -> Iterator[list[_Piece]]:
    current: list[_Piece] = []
    for piece in pieces:
        if current:
            starts_section = piece.element_type in _SECTION_TYPES and any(
                p.element_type not in _SECTION_TYPES for p in current
            )
            fits = counter(text[current[0].start : piece.end]) <= max_tokens
            if starts_section or not fits or piece.attachment != current[0].attachment:
                yield current
                current = []
        current.append(piece)
    if current:
        yield current


def _draft(text: str, group: list[_Piece], ordinal: int, counter: _CachedCounter) -> ChunkDraft:
    start, end = group[0].start, group[-1].end
    body = text[start:end]
    types: list[str] = []
    for piece in group:
        if piece.element_type not in types:
            types.append(piece.element_type)
    page = next((p.page_number for p in group if p.page_number is not None), None)
    return ChunkDraft(
        ordinal=ordinal,
        text=body,
        sha256=hashlib.sha256(body.encode("utf-8")).hexdigest(),
        start=start,
        end=end,
        page_number=page,
        element_types=tuple(types),
        token_count=counter.tokens(body),
        attachment=group[0].attachment,
    )


def _fit(
    text: str, start: int, end: int, counter: _CachedCounter, max_tokens: int, *, level: int
) -> Iterator[tuple[int, int]]:
    """Spans covering text[start:end] (minus whitespace) of at most max_tokens each, as large as possible, in
    order (lazily: a caller that stops early leaves the rest uncut)."""
    if counter(text[start:end]) <= max_tokens:
        yield start, end
        return
    if level >= 2:
        yield from _split_chars(text, start, end, counter, max_tokens)
        return
    units = _units(text, start, end, level)
    i = 0
    while i < len(units):
        # Largest j with units[i..j] fitting; token counts grow with the slice, so the search holds.
        def fits(j: int, a: int = units[i][0]) -> bool:
            return counter(text[a : units[j][1]]) <= max_tokens

        best = _largest_fit(fits, i, len(units) - 1)
        if best < i:
            yield from _fit(text, units[i][0], units[i][1], counter, max_tokens, level=level + 1)
            i += 1
        else:
            yield units[i][0], units[best][1]
            i = best + 1


def _units(text: str, start: int, end: int, level: int) -> list[tuple[int, int]]:
    """Sentence spans (level 0) or word spans (level 1) inside [start, end), whitespace stripped."""
    if level == 1:
        return [(start + m.start(), start + m.end()) for m in _WORD.finditer(text[start:end])]
    cuts = [start] + [start + m.end() for m in _SENTENCE_END.finditer(text[start:end])] + [end]
    units: list[tuple[int, int]] = []
    for a, b in itertools.pairwise(cuts):
        segment = text[a:b]
        stripped = segment.strip()
        if stripped:
            lead = len(segment) - len(segment.lstrip())
            units.append((a + lead, a + lead + len(stripped)))
    return units


def _split_chars(
    text: str, start: int, end: int, counter: _CachedCounter, max_tokens: int
) -> Iterator[tuple[int, int]]:
    pos = start
    while pos < end:
        # At least one character per span guarantees progress.
        def fits(m: int, a: int = pos) -> bool:
            return counter(text[a:m]) <= max_tokens

        best = max(pos + 1, _largest_fit(fits, pos + 1, end))
        yield pos, best
        pos = best


def _largest_fit(fits: Callable[[int], bool], lo: int, hi: int) -> int:
    """The largest k in [lo, hi] with fits(k), for `fits` true up to some k and false after; lo - 1 if none.

    Galloping from lo (1, 2, 4 ... past it), then bisecting the last step: the probes measure slices about the
    size of the answer (a chunk), never half of what is left of a long element. A plain bisection over
    [lo, hi] measured slices of up to half the element at every step: quadratic in a long paragraph or table
    (400 KB took 76 s, a 10 MB line did not finish)."""
    if lo > hi or not fits(lo):
        return lo - 1
    good, step = lo, 1
    bad = hi + 1
    while good + step <= hi:
        if not fits(good + step):
            bad = good + step
            break
        good, step = good + step, step * 2
    lo, hi = good + 1, bad - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            good, lo = mid, mid + 1
        else:
            hi = mid - 1
    return good


class _CachedCounter:
    """Memoises the token counter within one document (packing re-measures the same slices). Called, the size a
    slice counts for: its tokens, and at least one per CHARS_PER_TOKEN characters; a slice whose characters alone
    exceed `max_tokens` counts for them, untokenized (it fits nowhere: the tokenizer's time on it would be lost);
    `tokens`: its tokens."""

    def __init__(self, count: Callable[[str], int], max_tokens: int) -> None:
        self._count = count
        self._max_tokens = max_tokens
        self._cache: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        floor = -(-len(text) // CHARS_PER_TOKEN)
        return floor if floor > self._max_tokens else max(self.tokens(text), floor)

    def tokens(self, text: str) -> int:
        value = self._cache.get(text)
        if value is None:
            value = self._count(text)
            self._cache[text] = value
        return value
