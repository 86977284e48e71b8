"""The engine lifeline: a multiprocessing child ends once its parent is killed.

Real processes: a parent started with subprocess starts a child the way vLLM starts its
engine core (multiprocessing, spawn), the child runs the plugin hook, and the parent is
then killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

from services.inference import lifeline
from tests.processes import alive

ROOT = Path(__file__).resolve().parents[3]

PARENT = textwrap.dedent(
    """
    import multiprocessing, sys, time
    from pathlib import Path

    def child(out):
        from services.inference import lifeline
        lifeline.register()
        Path(out).write_text("ready")
        time.sleep(600)

    if __name__ == "__main__":
        out = sys.argv[1]
        process = multiprocessing.get_context("spawn").Process(target=child, args=(out,))
        process.start()
        Path(out + ".pid").write_text(str(process.pid))
        time.sleep(600)
    """
)


def _wait(predicate, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds  # generous: the machine may be busy
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_child_ends_when_its_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    out = tmp_path / "child"
    parent = subprocess.Popen(
        [sys.executable, str(script), str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert _wait(lambda: out.exists() and Path(f"{out}.pid").exists()), (
            "the child never started"
        )
        child = int(Path(f"{out}.pid").read_text())
        time.sleep(3 * lifeline.POLL_SECONDS)
        assert alive(child), "the child ended while its parent was alive"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert _wait(lambda: not alive(child)), f"child {child} outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if Path(f"{out}.pid").exists():
            pid = int(Path(f"{out}.pid").read_text())
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_watch_calls_back_once_the_parent_is_not_the_one_given(monkeypatch):
    monkeypatch.setattr(lifeline, "_watching", False)
    called = threading.Event()
    not_my_parent = os.getpid()  # this process is never its own parent
    assert lifeline.watch_parent(not_my_parent, poll_seconds=0.01, orphaned=called.set)
    assert called.wait(30)
    # One watch per process, however often vLLM calls the hook.
    assert not lifeline.watch_parent(not_my_parent, orphaned=called.set)


def test_register_leaves_a_process_without_multiprocessing_parent_alone(monkeypatch):
    monkeypatch.setattr(lifeline, "_watching", False)
    lifeline.register()  # pytest's own process: no multiprocessing parent
    assert not lifeline._watching
    assert not [t for t in threading.enumerate() if t.name == "loraplex-lifeline"]


def test_vllm_finds_the_plugin():
    plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert plugins.get("loraplex_engine_lifeline") == "services.inference.lifeline:register"
