"""chunk_document: deterministic, bounded in tokens, offsets into the document text, sections respected."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.chunk import chunk_document, chunker_version
from ingest.parse import SEPARATOR
from ingest.types import ChunkDraft, ParsedDocument, ParsedElement

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: words and punctuation marks (the real one is the embedder's)."""
    return len(_TOKEN.findall(text))


def make_doc(*elements: tuple[str, str] | tuple[str, str, int]) -> ParsedDocument:
    """(element_type, text[, page]) tuples -> a ParsedDocument joined the way parse_document joins them."""
    parsed: list[ParsedElement] = []
    cursor = 0
    for item in elements:
        element_type, text = item[0], item[1]
        page = item[2] if len(item) == 3 else None
        if parsed:
            cursor += len(SEPARATOR)
        parsed.append(
            ParsedElement(text=text, element_type=element_type, start=cursor, end=cursor + len(text), page_number=page)
        )
        cursor += len(text)
    return ParsedDocument(
        elements=tuple(parsed), text=SEPARATOR.join(e.text for e in parsed), mime_type="text/plain", parser="test"
    )


def sentences(n: int, word: str = "budget") -> str:
    return " ".join(f"The {word} review number {i} covers hiring and vendor contracts." for i in range(n))


def assert_well_formed(
    doc: ParsedDocument, chunks: list[ChunkDraft], max_tokens: int, counter: Callable[[str], int] = count_tokens
) -> None:
    for ordinal, chunk in enumerate(chunks):
        assert chunk.ordinal == ordinal
        assert chunk.text == doc.text[chunk.start : chunk.end]
        assert chunk.text == chunk.text.strip() and chunk.text
        assert chunk.sha256 == hashlib.sha256(chunk.text.encode("utf-8")).hexdigest()
        assert chunk.token_count == counter(chunk.text) <= max_tokens
    assert all(a.end <= b.start for a, b in itertools.pairwise(chunks))
    # Nothing but whitespace is lost between chunks.
    covered = "".join(c.text for c in chunks)
    assert re.sub(r"\s", "", covered) == re.sub(r"\s", "", doc.text)


def test_small_elements_are_packed_into_one_chunk() -> None:
    doc = make_doc(("Title", "Budget"), ("NarrativeText", "Hiring is slow."), ("ListItem", "Vendors renew.", 2))

    chunks = chunk_document(doc, count_tokens=count_tokens, max_tokens=50)

    assert len(chunks) == 1
    assert chunks[0].text == doc.text
    assert chunks[0].element_types == ("Title", "NarrativeText", "ListItem")
    assert (chunks[0].start, chunks[0].end) == (0, len(doc.text))


def test_a_title_starts_a_new_chunk_and_stays_with_its_section() -> None:
    doc = make_doc(
        ("Title", "Budget"),
        ("NarrativeText", "Hiring is slow."),
        ("Title", "Risks"),
        ("Title", "Vendors"),
        ("NarrativeText", "Contracts expire in March."),
    )

    chunks = chunk_document(doc, count_tokens=count_tokens, max_tokens=50)

    assert [c.text for c in chunks] == ["Budget\n\nHiring is slow.", "Risks\n\nVendors\n\nContracts expire in March."]


def test_long_element_is_split_at_sentence_ends_within_the_bound() -> None:
    doc = make_doc(("NarrativeText", sentences(40), 3))

    chunks = chunk_document(doc, count_tokens=count_tokens, max_tokens=60)

    assert len(chunks) > 1
    assert_well_formed(doc, chunks, 60)
    assert all(c.text.endswith(".") for c in chunks)
    assert {c.page_number for c in chunks} == {3}


def test_overlong_sentence_and_word_are_split() -> None:
    giant_word = "x" * 5000
    run_on = " ".join(["word"] * 500)
    doc = make_doc(("NarrativeText", run_on), ("UncategorizedText", giant_word))

    def ten_chars_a_token(text: str) -> int:  # so that a single word can overflow the bound
        return sum(-(-len(word) // 10) for word in text.split())

    chunks = chunk_document(doc, count_tokens=ten_chars_a_token, max_tokens=40)

    assert_well_formed(doc, chunks, 40, ten_chars_a_token)
    assert sum(1 for c in chunks if set(c.text) == {"x"}) >= 5000 // 400
    assert all(c.text.split() == ["word"] * len(c.text.split()) for c in chunks if "x" not in c.text)


def test_a_run_the_tokenizer_reads_as_one_token_is_still_bounded_in_characters() -> None:
    """A WordPiece tokenizer reads any word over 100 characters as one unknown token: a megabyte of hex without
    a space was one "token", one chunk, and past spaCy's million characters a 500 at upload (found by review).
    A slice counts for at least one token per CHARS_PER_TOKEN characters; the chunk records its real tokens."""
    from ingest.chunk import CHARS_PER_TOKEN

    def wordpiece_like(text: str) -> int:  # a word over 100 characters is one token
        return sum(1 if len(word) > 100 else -(-len(word) // 4) for word in text.split())

    run = "0f" * 550_000  # 1.1 million characters, no break
    doc = make_doc(("NarrativeText", "Key material for the vault:"), ("UncategorizedText", run))
    chunks = chunk_document(doc, count_tokens=wordpiece_like, max_tokens=200)
    assert max(len(c.text) for c in chunks) <= 200 * CHARS_PER_TOKEN
    assert sum(len(c.text) for c in chunks if set(c.text) <= set("0f")) == len(run)
    assert all(c.token_count == wordpiece_like(c.text) for c in chunks)
    prose = chunk_document(make_doc(("NarrativeText", sentences(40))), count_tokens=count_tokens, max_tokens=200)
    assert all(c.token_count > 180 for c in prose[:-1])  # prose is cut by its tokens, never by the character bound


def test_same_input_same_chunks() -> None:
    doc = make_doc(("Title", "Budget"), ("NarrativeText", sentences(30)), ("Table", "Unit Budget Sales 1200"))

    first = chunk_document(doc, count_tokens=count_tokens, max_tokens=80)
    second = chunk_document(doc, count_tokens=count_tokens, max_tokens=80)

    assert first == second
    assert [c.sha256 for c in first] == [c.sha256 for c in second]


def test_chunker_version_names_the_bound() -> None:
    assert chunker_version(200) != chunker_version(180)
    assert "200" in chunker_version(200)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Title", "NarrativeText", "ListItem", "Table"]),
            st.text(alphabet=st.sampled_from("abc de.!?\n,"), min_size=1, max_size=400).map(str.strip).filter(bool),
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(min_value=5, max_value=60),
)
def test_property_chunks_are_bounded_contiguous_slices(elements: list[tuple[str, str]], max_tokens: int) -> None:
    doc = make_doc(*elements)

    chunks = chunk_document(doc, count_tokens=count_tokens, max_tokens=max_tokens)

    assert_well_formed(doc, chunks, max_tokens)
    assert chunks == chunk_document(doc, count_tokens=count_tokens, max_tokens=max_tokens)


def test_a_long_paragraph_or_line_is_measured_in_near_linear_work() -> None:
    """The token counter sees slices about a chunk long, not halves of what is left: a 400 KB paragraph (and a
    1 MB line without sentence ends, and a 200 KB word) cost a bounded multiple of their length in measured
    characters. The former bisection measured ~n^2 / chunk: a 10 MB line never finished (a review found it)."""
    measured = 0

    def counting(text: str) -> int:
        nonlocal measured
        measured += len(text)
        return count_tokens(text)

    sentences = " ".join(f"Row {i} lists a supplier in Lyon with net terms of thirty days." for i in range(6_000))
    line = "word " * 200_000
    word = "ab." * 70_000  # one word of many tokens: split by characters
    for text in (sentences, line, word):
        measured = 0
        drafts = chunk_document(make_doc(("NarrativeText", text)), count_tokens=counting, max_tokens=64)
        assert all(count_tokens(d.text) <= 64 for d in drafts) and "".join(d.text for d in drafts).replace(" ", "") \
            == text.replace(" ", "")
        assert measured <= 60 * len(text), (len(text), measured)


def test_chunking_stops_at_the_chunk_limit_and_what_it_made_up_to_there_is_unchanged() -> None:
    """`max_chunks`: TooManyChunksError as soon as the document makes one chunk more, with the rest of the document
    never measured (a refused 50 MB line costs what its first chunks do, not minutes); at or under the limit, the
    same chunks as without one."""
    import pytest

    from ingest.chunk import CHARS_PER_TOKEN
    from ingest.errors import TooManyChunksError

    longest = 0

    def counting(text: str) -> int:
        nonlocal longest
        longest = max(longest, len(text))
        return count_tokens(text)

    doc = make_doc(*[("NarrativeText", sentences(8, word=f"w{i}")) for i in range(400)])
    whole = chunk_document(doc, count_tokens=count_tokens, max_tokens=64)
    assert chunk_document(doc, count_tokens=count_tokens, max_tokens=64, max_chunks=len(whole)) == whole
    seen: list[str] = []

    def recording(text: str) -> int:
        seen.append(text)
        return count_tokens(text)

    with pytest.raises(TooManyChunksError, match="limit of 5"):
        chunk_document(doc, count_tokens=recording, max_tokens=64, max_chunks=5)
    reached = max(doc.text.find(t) + len(t) for t in seen)
    assert reached < whole[8].end < len(doc.text)  # nothing past a few chunks was measured
    # A slice that cannot fit on its characters alone is never handed to the tokenizer: a 10 MB line is cut
    # without tokenizing it whole first.
    line = make_doc(("NarrativeText", "word " * 2_000_000))
    with pytest.raises(TooManyChunksError):
        chunk_document(line, count_tokens=counting, max_tokens=64, max_chunks=3)
    assert longest <= 64 * CHARS_PER_TOKEN
