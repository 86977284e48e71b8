# loraplex registry: adapters, versions, aliases (gRPC :50051, Prometheus :51051).
# Build from the repository root:
#   docker build -f docker/registry.Dockerfile -t loraplex/registry:0.1.0 .
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
# Stubs are generated here from protos/ with the pinned grpcio-tools, never copied in.
RUN pip install -c requirements/constraints.txt grpcio-tools==1.85.1
# Dependencies before the sources, so a code change rebuilds one small layer.
COPY pyproject.toml README.md ./
RUN pip install -c requirements/constraints.txt ".[services,s3]"
COPY protos protos
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY loraplex loraplex
COPY services services
RUN python scripts/gen_protos.py \
 && pip install --no-deps -c requirements/constraints.txt . \
 && pip uninstall -y grpcio-tools

FROM ${BASE_IMAGE} AS runtime
# HOME under /tmp: the pods run with a read-only root file system and an emptyDir on /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    LORAPLEX_DATA_DIR=/data \
    LORAPLEX_LOG_JSON=true \
    LORAPLEX_REGISTRY_HOST=0.0.0.0
RUN groupadd --system --gid 10001 loraplex \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin loraplex \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /data
USER 10001:10001
EXPOSE 50051 51051
CMD ["python", "-m", "services.registry"]
