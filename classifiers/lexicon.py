"""Everyday words and name words: what the rules in names.py and refine.py ask of a word.

Common words come from the spaCy model's own rule-lemmatizer index (WordNet's nouns, verbs, adjectives and
adverbs, ~90k lemmas), so nothing extra is shipped; name words from the US Census lists in `names` (MIT).
WordNet also lists famous people and places ("johnson", "paris"), so a word counts as a name when a name list
has it, and as everyday when only the dictionary has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# Why a rank cut for surnames that are also dictionary words: "Johnson" and "Young" are names first; "Royal",
# "Wisdom" and "Weekly" (ranks 2,500-20,000 of the census list) are words first.
COMMON_SURNAME_RANK = 1_000
# All-caps words of everyday business language that NER models tag as organisations.
COMMON_ACRONYMS: frozenset[str] = frozenset({
    "SSN", "IBAN", "ATM", "ASAP", "PIN", "CEO", "CFO", "CTO", "COO", "HR", "IT", "FAQ", "ID", "VAT", "GDPR",
    "API", "URL", "PDF", "SMS", "OK", "USD", "EUR", "GBP", "KPI", "ETA", "FYI", "CV", "DOB", "IP", "VPN", "NDA",
})
# Words that mark an organisation's name even when the rest of it is everyday words or a person's name
# ("Climate Corporation", "Russell Investments").
ORG_DESIGNATORS = frozenset({
    "inc", "incorporated", "ltd", "limited", "llc", "llp", "plc", "gmbh", "ag", "sa", "corp", "corporation",
    "co", "company", "group", "holdings", "bank", "university", "college", "institute", "foundation",
    "association", "agency", "partners", "associates", "society", "union", "council", "ministry",
    "department", "hospital", "clinic", "school", "orchestra", "club", "trust", "fund", "capital",
    "technologies", "solutions", "systems", "software", "labs", "insurance", "investments",
})


@lru_cache(maxsize=4)
def census_names(kind: str, max_rank: int | None = None) -> frozenset[str]:
    """Lower-cased names of one census list ("first": given names, "last": surnames) from the `names` package.

    `max_rank` keeps the most frequent only. Empty if the package is not installed (the rules then find less).
    """
    files_by_kind = {"first": ("dist.male.first", "dist.female.first"), "last": ("dist.all.last",)}
    try:
        from importlib.resources import files

        lines = [ln for f in files_by_kind[kind] for ln in files("names").joinpath(f).read_text("utf-8").splitlines()]
    except (ImportError, FileNotFoundError, OSError):
        return frozenset()
    out = set()
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and (max_rank is None or int(parts[3]) <= max_rank):
            out.add(parts[0].lower())
    return frozenset(out)


@dataclass(frozen=True)
class Lexicon:
    """Lower-cased everyday words and name words."""

    common_words: frozenset[str]
    name_words: frozenset[str]

    @classmethod
    def from_nlp(cls, nlp: Any) -> Lexicon:
        """Common words from a spaCy pipeline's rule lemmatizer (none without one), names from the census."""
        words: set[str] = set()
        try:
            index = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_index") if nlp is not None else None
        except (KeyError, AttributeError, ValueError):
            index = None
        if index is not None:
            for pos in ("noun", "verb", "adj", "adv"):
                words.update(w for w in index.get(pos, []) if "_" not in w)
        common = frozenset(words)
        frequent = census_names("last", COMMON_SURNAME_RANK)
        last = {n for n in census_names("last", 20_000) if n not in common or n in frequent}
        return cls(common, frozenset(census_names("first") | last))

    @staticmethod
    def forms(word: str, lemma: str = "") -> set[str]:
        """The word, its lemma and its regular singular (proper-noun tokens keep "Pleasures" as their lemma)."""
        lower = word.lower()
        out = {lower, lemma.lower() or lower}
        if lower.endswith("s") and len(lower) > 3:
            out.add(lower[:-1])
            if lower.endswith("es"):
                out.add(lower[:-2])
        return out

    def is_name(self, word: str, lemma: str = "") -> bool:
        return bool(self.forms(word, lemma) & self.name_words)

    def is_everyday(self, word: str, lemma: str = "") -> bool:
        """A dictionary word that no name list has."""
        forms = self.forms(word, lemma)
        return bool(forms & self.common_words) and not forms & self.name_words

    def is_unknown(self, word: str, lemma: str = "") -> bool:
        """Neither a dictionary word nor a listed name: in running text, most often a rarer name."""
        forms = self.forms(word, lemma)
        return not forms & self.common_words and not forms & self.name_words


EMPTY_LEXICON = Lexicon(frozenset(), frozenset())
