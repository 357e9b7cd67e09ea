"""Personal data in the names citations show beside a document's text: its file name, its key, its URI and
its attachments' names.

A name is classified in two readings, each one character for one so that offsets hold for the name, both
without its file extension: for identifiers, with `_` and path separators as spaces (`from_a.b@c.com.txt`);
for people, with every separator as a space (`Jonas_Weber_review.md`). A name is not prose: the NER model reads
`Spring Campaign`, `Salesforce export` or `jan` as people and pattern recognizers read `v3` as a driver's
licence. What a name's findings may add to its chunks is therefore kept strict:

- identifiers whose recognizers validate their form: e-mail addresses, phone numbers, IBANs, card numbers;
- a person only as a run of two or more capitalised words, at least one of them a listed first name or
  surname and none an everyday word (`Jonas Weber` in `Jonas_Weber_review.md`, trimmed to those words).

Anything else (a place, a date, a single first name, an everyday phrase) adds nothing: a false positive here
would relabel every chunk of the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from classifiers.lexicon import Lexicon
from classifiers.types import Finding

SEPARATORS_AS_SPACES = str.maketrans({c: " " for c in "_-.+/\\"})
_BETWEEN_WORDS_AS_SPACES = str.maketrans({c: " " for c in "_/\\"})
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")
VALIDATED_TYPES = frozenset({"EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "CREDIT_CARD"})
_WORD = re.compile(r"[^\W\d_]+")


def readings(name: str) -> tuple[str, str]:
    """The two texts a name is classified as (same length as the name): for identifiers, and for people."""
    bare = _EXTENSION.sub(lambda m: " " * len(m.group()), name)
    return bare.translate(_BETWEEN_WORDS_AS_SPACES), bare.translate(SEPARATORS_AS_SPACES)


def vetted(name: str, findings: Iterable[Finding], lexicon: Lexicon) -> tuple[Finding, ...]:
    """The findings of a name's readings that may mark its chunks: validated identifiers, and people as runs
    of capitalised name words (trimmed to the run); deduplicated, in order."""
    kept: dict[tuple[int, int, str], Finding] = {}
    for f in findings:
        if f.entity_type in VALIDATED_TYPES:
            kept[(f.start, f.end, f.entity_type)] = f
        elif f.entity_type == "PERSON":
            run = _person_run(readings(name)[1], f.start, f.end, lexicon)
            if run is not None:
                kept[(run[0], run[1], "PERSON")] = Finding("PERSON", run[0], run[1], f.score, f.recognizer)
    return tuple(kept[k] for k in sorted(kept))


def _person_run(spaced: str, start: int, end: int, lexicon: Lexicon) -> tuple[int, int] | None:
    """The longest run of consecutive capitalised words in spaced[start:end] that are names or unknown words
    (never everyday ones), with at least two words and one listed name; None if there is none."""
    words = [(m.start() + start, m.end() + start, m.group()) for m in _WORD.finditer(spaced[start:end])]
    best: Sequence[tuple[int, int, str]] = ()
    run: list[tuple[int, int, str]] = []
    for w in [*words, None]:
        if w is not None and w[2][0].isupper() and not lexicon.is_everyday(w[2]):
            run.append(w)
            continue
        if len(run) >= 2 and any(lexicon.is_name(x[2]) for x in run) and len(run) > len(best):
            best = list(run)
        run = []
    return (best[0][0], best[-1][1]) if best else None


_SEPARATORS = r"[\s_\-.+/\\]+"


def in_text(name: str, findings: Iterable[Finding], text: str) -> tuple[Finding, ...]:
    """Where the personal data found in a name (`vetted`) also occurs in a chunk's text, as spans of that text:
    case-insensitive, its words joined by any run of separators (`Maria_Garcia.txt` finds "maria garcia"). A
    chunk personal by its name masks these too, so the text served masked, and its masked twin's vector, never
    keep a name its own classifier missed."""
    found: dict[tuple[int, int, str], Finding] = {}
    for f in findings:
        words = [w for w in re.split(_SEPARATORS, name[f.start:f.end]) if w]
        if not words:
            continue
        pattern = re.compile(r"(?<!\w)" + _SEPARATORS.join(re.escape(w) for w in words) + r"(?!\w)", re.IGNORECASE)
        for m in pattern.finditer(text):
            found.setdefault((m.start(), m.end(), f.entity_type),
                             Finding(f.entity_type, m.start(), m.end(), f.score, "shown_name"))
    return tuple(found[k] for k in sorted(found))

