# syntax=docker/dockerfile:1
# loraplex retrieval: document ingest, embeddings, FAISS + BM25 search (gRPC :50052, Prometheus :51052).
# Build from the repository root:
#   docker build -f docker/retrieval.Dockerfile -t loraplex/retrieval:0.1.0 .

FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
# Stubs are generated here from protos/ with the pinned grpcio-tools, never copied in.
# CPU build of torch from the PyTorch index (PyPI's default Linux wheel is the CUDA one); the
# constraints pin the same 2.13.0+cpu, so the install below keeps it.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu \
 && pip install -c requirements/constraints.txt grpcio-tools==1.85.1
COPY pyproject.toml README.md ./
COPY protos protos
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY loraplex loraplex
COPY services services
RUN python scripts/gen_protos.py \
 && pip install -c requirements/constraints.txt ".[services,ml]" \
 && pip uninstall -y grpcio-tools

FROM python:3.11-slim-bookworm AS runtime
# HOME under /tmp: the pods run with a read-only root file system and an emptyDir on /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    LORAPLEX_DATA_DIR=/data \
    LORAPLEX_LOG_JSON=true \
    LORAPLEX_RETRIEVAL_HOST=0.0.0.0
RUN groupadd --system --gid 10001 loraplex \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin loraplex \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /data
USER 10001:10001
EXPOSE 50052 51052
CMD ["python", "-m", "services.retrieval"]
