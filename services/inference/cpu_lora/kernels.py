"""Builds and loads the C++ LoRA ops (`csrc/lora_kernels.cpp`) as `torch.ops.loraplex_kernels`.

Compiled on first use with the toolchain torch.compile already needs on the CPU (g++, ninja),
for the host CPU (`-march=native`), and cached per source, torch version and CPU features, so
each machine builds once (~10 s) and every later engine process loads the cached library.
`make setup` builds it ahead of time. When it cannot be built the wrapper falls back to the
plain-torch ops of `ops.py` (same results, slower) and says so once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from functools import cache
from pathlib import Path

import torch

from services.inference.cpu_lora.plugin import env_off

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "lora_kernels.cpp"
BUILD_DIR_ENV = "LORAPLEX_CPU_LORA_BUILD_DIR"
KERNELS_ENV = "LORAPLEX_CPU_LORA_KERNELS"
# -fopenmp: ATen's parallel_for compiles to OpenMP regions only with it; the library then uses the
# libgomp torch already loaded (same soname), so the ops share vLLM's bound thread pool.
CFLAGS = ["-O3", "-march=native", "-fopenmp"]


def _cpu_tag() -> str:
    """What `-march=native` depends on: machine and CPU flags (a build dir shared by different
    CPUs must not hand one of them code for instructions it lacks)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:12]


def build_dir() -> Path:
    """Where the compiled library is cached: `LORAPLEX_CPU_LORA_BUILD_DIR`, else under
    `XDG_CACHE_HOME` (`~/.cache`)."""
    root = os.environ.get(BUILD_DIR_ENV)
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(cache) / "loraplex" / "cpu_lora_kernels")
    return Path(root) / f"torch-{torch.__version__}-{_cpu_tag()}"


def compile_ops(
    folder: Path, name: str = "loraplex_cpu_lora_kernels", defines: tuple[str, ...] = ()
) -> None:
    """Builds `csrc/lora_kernels.cpp` into `folder` (unless cached there) and loads it; `defines`
    are extra `-D` flags, e.g. the tests' portable build under another op namespace."""
    from torch.utils import cpp_extension

    folder.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=name,
        sources=[str(SOURCE)],
        extra_cflags=[*CFLAGS, *(f"-D{define}" for define in defines)],
        build_directory=str(folder),
        is_python_module=False,
        verbose=False,
    )


@cache
def load() -> bool:
    """Compiles (once per machine) and loads the ops; False, with a warning, when unavailable."""
    if env_off(KERNELS_ENV):
        logger.info("loraplex C++ LoRA ops off (%s=0): using the plain-torch ops", KERNELS_ENV)
        return False
    if hasattr(torch.ops.loraplex_kernels, "lora_linear"):  # already loaded in this process
        return True
    folder = build_dir()
    try:
        compile_ops(folder)
    except Exception as exc:  # compiler missing, headers missing, read-only cache dir...
        logger.warning(
            "loraplex C++ LoRA ops unavailable (%s: %s); using the slower plain-torch ops. "
            "Needs g++ and ninja, and a writable %s.",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
            folder,
        )
        return False
    logger.info("loraplex C++ LoRA ops loaded (%s)", folder)
    return True


if __name__ == "__main__":  # `make setup`: build ahead of the first engine start
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not load():
        raise SystemExit("loraplex C++ LoRA ops: build failed (engines will use plain-torch ops)")
    logger.info("loraplex C++ LoRA ops ready in %s", build_dir())
