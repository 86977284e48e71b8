"""`python -m services.inference`: the inference server (vLLM embedded)."""

from services.common.server import run
from services.inference.app import InferenceApp
from services.inference.settings import InferenceSettings


def main() -> None:
    run(InferenceSettings(), InferenceApp)


if __name__ == "__main__":
    main()
