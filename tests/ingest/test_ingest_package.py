"""`import ingest` stays cheap: no torch, transformers, unstructured or spaCy until a model or parser is used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "sentence_transformers", "unstructured", "spacy")


def test_importing_the_pipeline_loads_no_heavy_library() -> None:
    code = (
        "import json, sys\n"
        "import ingest\n"
        "from ingest import IngestPipeline, parse_document, chunk_document, SentenceTransformerEmbedder, no_network\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)

    assert json.loads(result.stdout) == []


def test_every_exported_name_resolves() -> None:
    import ingest

    for name in ingest.__all__:
        assert getattr(ingest, name) is not None
