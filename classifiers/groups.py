"""Nationalities, religious and political groups (Presidio's NRP): a word list and the recognizer built on it.

Why a list next to NER: the small spaCy model finds capitalised group words ("Polish", "Muslims") but misses
lower-case or plural ones ("i am cambodian", "proud saudis"), and it also tags other capitalised plurals
("Pedestrians") and shouting place names as NORP. The list both finds the words and vets NER's NORP spans.
Demonyms of the ~240 regions phonenumbers knows are derived by the regular English suffix rules (Cambodia ->
Cambodian, Sudan -> Sudanese, Iraq -> Iraqi, Iceland -> Icelander); irregular ones are listed by hand.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

# Demonyms that the suffix rules do not produce (or produce wrongly), and groups that are not countries.
IRREGULAR_DEMONYMS = frozenset({
    "american", "british", "english", "scottish", "scots", "welsh", "irish", "french", "dutch", "flemish",
    "walloon", "swiss", "spanish", "portuguese", "danish", "dane", "swedish", "swede", "finnish", "finn",
    "norwegian", "polish", "pole", "czech", "slovak", "greek", "turkish", "turk", "cypriot", "maltese",
    "lebanese", "thai", "lao", "laotian", "burmese", "filipino", "filipina", "vietnamese", "chinese",
    "japanese", "korean", "taiwanese", "mongolian", "nepali", "nepalese", "bangladeshi", "bengali",
    "pakistani", "afghan", "iraqi", "iranian", "persian", "israeli", "palestinian", "saudi", "emirati",
    "yemeni", "omani", "qatari", "kuwaiti", "bahraini", "jordanian", "syrian", "egyptian", "moroccan",
    "algerian", "tunisian", "libyan", "sudanese", "somali", "ethiopian", "eritrean", "kenyan", "ugandan",
    "nigerian", "ghanaian", "senegalese", "ivorian", "congolese", "malagasy", "mauritian", "zimbabwean",
    "zambian", "south african", "peruvian", "mexican", "brazilian", "argentine", "argentinian", "chilean",
    "colombian", "venezuelan", "ecuadorian", "ecuadorean", "bolivian", "paraguayan", "uruguayan", "cuban",
    "dominican", "haitian", "jamaican", "puerto rican", "salvadoran", "salvadorian", "guatemalan",
    "honduran", "nicaraguan", "panamanian", "costa rican", "canadian", "australian", "aussie", "kiwi",
    "new zealander", "fijian", "samoan", "tongan", "hawaiian", "icelandic", "greenlandic", "faroese",
    "belarusian", "ukrainian", "russian", "moldovan", "romanian", "bulgarian", "serbian", "serb", "croat",
    "croatian", "bosnian", "slovenian", "slovene", "macedonian", "albanian", "kosovar", "montenegrin",
    "hungarian", "magyar", "austrian", "german", "luxembourgish", "belgian", "monegasque", "andorran",
    "sammarinese", "liechtensteiner", "estonian", "latvian", "lithuanian", "georgian", "armenian",
    "azerbaijani", "azeri", "kazakh", "kyrgyz", "uzbek", "tajik", "turkmen", "indian", "sri lankan",
    "sinhalese", "tamil", "maldivian", "bhutanese", "indonesian", "malaysian", "malay", "singaporean",
    "bruneian", "cambodian", "khmer", "timorese", "papuan", "greenlander", "icelander",
    # peoples, regions and wider groups
    "european", "asian", "african", "arab", "arabian", "latino", "latina", "latinx", "hispanic", "caucasian",
    "scandinavian", "nordic", "balkan", "slavic", "slav", "baltic", "celtic", "anglo", "kurd", "kurdish",
    "basque", "catalan", "galician", "corsican", "sicilian", "breton", "chechen", "tatar", "uyghur", "tibetan",
    "maori", "aboriginal", "inuit", "romani", "berber", "bedouin", "pashtun", "punjabi",
    "gujarati", "yoruba", "igbo", "hausa", "zulu", "xhosa", "maasai", "cherokee", "navajo", "sioux",
    "hutu", "tutsi", "parsi",
    # religious groups
    "muslim", "moslem", "islamic", "christian", "catholic", "protestant", "orthodox", "evangelical",
    "lutheran", "methodist", "baptist", "anglican", "presbyterian", "pentecostal", "mormon", "quaker",
    "amish", "mennonite", "jew", "jewish", "hindu", "buddhist", "sikh", "bahai", "zoroastrian",
    "taoist", "shinto", "sunni", "shia", "shiite", "shii", "sufi", "salafi", "wahhabi", "atheist", "agnostic",
    # political groups
    "democrat", "republican", "socialist", "communist", "marxist", "leninist",
    "maoist", "fascist", "nazi", "neo-nazi", "anarchist", "libertarian", "labourite", "tory", "whig",
    "zionist", "islamist", "jihadist",
})
# Words in the lists above that are mostly something else when written in lower case (a verb, a fruit, a
# general adjective, french fries): these count only when capitalised.
CAPITALISED_ONLY = frozenset({
    "polish", "pole", "turk", "republican", "democrat", "orthodox", "evangelical", "kiwi", "lao", "malay",
    "tory", "whig", "baptist", "georgian", "dane", "finn", "swede", "slav", "celtic", "nordic", "baltic",
    "french", "dutch", "swiss", "catholic", "anglo",
})
# Regions whose derived demonyms would be common words, or whose names are not used for peoples.
_NOT_DERIVED = frozenset({"chad", "jordan", "georgia", "jersey", "guinea", "niger", "turkey", "mali", "chile"})
# Singular endings that take no plural -s ("Japanese", "English", "Dutch", "Swiss").
_NO_PLURAL = ("ese", "sh", "ch", "ss", "s", "x", "z")


def _derived_demonyms(region_names: list[str]) -> set[str]:
    """Regular demonyms of one-word region names: -an / -ian / -ean / -ese / -i / -er (see the module doc)."""
    out: set[str] = set()
    for name in region_names:
        word = name.lower()
        if " " in word or not word.isalpha() or word in _NOT_DERIVED:
            continue
        stem = word[:-1] if word[-1] in "aeioy" else word
        out.update({stem + "an", stem + "ian", stem + "ese"})
        if word[-1] in "aeiou":
            out.add(word + "n")
        if word[-1] not in "aeiouy":
            out.add(word + "i")
        if word.endswith("land"):
            out.add(word + "er")
    return out


@lru_cache(maxsize=1)
def group_words() -> frozenset[str]:
    """Lower-cased singular group words: the hand list plus the derived demonyms."""
    from classifiers.recognizers import country_names

    return frozenset(IRREGULAR_DEMONYMS | _derived_demonyms(country_names()))


@lru_cache(maxsize=1)
def _first_words_of_pairs() -> frozenset[str]:
    """First words of two-word group names ("south" of "south african"), to try token pairs only there."""
    return frozenset(w.split()[0] for w in group_words() if " " in w)


def is_group_word(word: str) -> bool:
    """True if `word` (any case, singular or a regular plural) names a nationality, religion or political group."""
    lower = word.lower().replace("’", "'")
    if lower in CAPITALISED_ONLY and not word[:1].isupper():
        return False
    words = group_words()
    if lower in words:
        return True
    # plurals: Saudis, Americans, Icelanders, Shiites, Jews (but not "Swisses", "Englishs")
    return lower.endswith("s") and lower[:-1] in words and not lower[:-1].endswith(_NO_PLURAL)


_WORD = re.compile(r"[^\W\d_][\w'’-]*")


class GroupRecognizer(EntityRecognizer):
    """Nationality, religious and political group words (NRP), in any case, singular or plural.

    Works on the NLP engine's tokens (a set look-up per word, cheaper than a ~900-way regex alternation);
    two-word demonyms ("South African", "sri lankan") are matched as token pairs.
    """

    SCORE = 0.6

    def __init__(self) -> None:
        super().__init__(supported_entities=["NRP"], name="GroupRecognizer", supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[
            RecognizerResult]:
        if nlp_artifacts is None or not nlp_artifacts.tokens:
            return []
        tokens = list(nlp_artifacts.tokens)
        first_words = _first_words_of_pairs()
        results = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            word = tok.text
            end = i + 1
            if tok.lower_ in first_words and i + 1 < len(tokens) and tok.whitespace_ and is_group_word(
                    f"{word} {tokens[i + 1].text}"):
                end = i + 2
            elif len(word) < 3 or not word[0].isalpha() or word.isupper() or not is_group_word(word) or (
                    word[0].isupper() and self._starts_a_name(tokens, i)):
                i += 1
                continue
            last = tokens[end - 1]
            results.append(self._result(tok.idx, last.idx + len(last.text)))
            i = end
        return results

    @staticmethod
    def _starts_a_name(tokens: list[Any], i: int) -> bool:
        """ "European Union", "American Airlines": a capitalised word follows on the same line (a proper name)."""
        if i + 1 >= len(tokens) or "\n" in tokens[i].whitespace_ or not tokens[i].whitespace_:
            return False
        nxt = tokens[i + 1].text
        return nxt[:1].isupper() and nxt.isalpha() and not is_group_word(nxt)

    def _result(self, start: int, end: int) -> RecognizerResult:
        result = RecognizerResult(
            "NRP", start, end, self.SCORE,
            AnalysisExplanation(type(self).__name__, self.SCORE, textual_explanation="group word"),
        )
        result.recognition_metadata = {
            RecognizerResult.RECOGNIZER_NAME_KEY: "GroupRecognizer",
            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
        }
        return result


def names_a_group(value: str) -> bool:
    """True if a word of an NER NORP span is a group word ("the Polish", "Shia Muslims")."""
    return any(is_group_word(w) for w in _WORD.findall(value))
