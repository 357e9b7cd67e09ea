"""Fixtures shared by the classifier tests: the real Presidio classifier, built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from classifiers import Classifier


@pytest.fixture(scope="session")
def presidio_classifier() -> Classifier:
    from classifiers import build_presidio_classifier

    return build_presidio_classifier()
