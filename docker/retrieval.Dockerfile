# loraplex retrieval: document ingest, embeddings, FAISS + BM25 search (gRPC :50052, Prometheus :51052).
# Build from the repository root:
#   docker build -f docker/retrieval.Dockerfile -t loraplex/retrieval:0.1.0 .
# `make images` builds every CPU image on any machine (see deploy/README.md): BASE_IMAGE
# replaces the official Python image where it cannot be pulled, and docker/build-inputs/ may
# hold a pip.conf, CA bundle and wheels for builds behind a proxy or offline.

ARG BASE_IMAGE=python:3.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7: FROM ${BASE_IMAGE} is python:3.11-slim-bookworm (a fixed tag) unless a build says otherwise

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONFIG_FILE=/build-inputs/pip.conf \
    PATH=/opt/venv/bin:$PATH
COPY docker/build-inputs/ /build-inputs/
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
# CPU build of torch (PyPI's default Linux wheel is the CUDA one) from TORCH_INDEX_URL, the
# PyTorch CPU index by default; where it cannot be reached, any index plus the wheel in
# /build-inputs/wheels (`make images` does that). The constraints pin the same 2.13.0+cpu,
# so later installs keep it.
# Stubs are generated below from protos/ with the pinned grpcio-tools, never copied in.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0+cpu \
 && pip install -c requirements/constraints.txt grpcio-tools==1.85.1
# Dependencies before the sources, so a code change rebuilds one small layer.
COPY pyproject.toml README.md ./
RUN pip install -c requirements/constraints.txt ".[services,ml,s3]"
COPY protos protos
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY loraplex loraplex
COPY services services
RUN python scripts/gen_protos.py \
 && pip install --no-deps -c requirements/constraints.txt . \
 && pip uninstall -y grpcio-tools

FROM ${BASE_IMAGE} AS runtime
# HOME and caches under /tmp: the pods run with a read-only root file system and an emptyDir
# on /tmp; the embedding model comes from its package, so the hub is never asked.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    HF_HUB_OFFLINE=1 \
    LORAPLEX_DATA_DIR=/data \
    LORAPLEX_LOG_JSON=true \
    LORAPLEX_RETRIEVAL_HOST=0.0.0.0
RUN groupadd --system --gid 10001 loraplex \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin loraplex \
 && mkdir -p /data \
 && chown -R 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /data
USER 10001:10001
EXPOSE 50052 51052
CMD ["python", "-m", "services.retrieval"]
