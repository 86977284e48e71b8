"""The plugin's switches: version pin, opt-out, platform check, idempotent patching."""

from __future__ import annotations

import pytest

from services.inference.cpu_lora import plugin


@pytest.fixture
def cpu_platform(monkeypatch: pytest.MonkeyPatch):
    """The current platform class, with `get_punica_wrapper` restored after the test."""
    from vllm.platforms import current_platform

    platform_cls = type(current_platform)
    monkeypatch.setattr(platform_cls, "get_punica_wrapper", platform_cls.get_punica_wrapper)
    return current_platform


def test_refuses_other_vllm_versions(monkeypatch: pytest.MonkeyPatch, cpu_platform) -> None:
    import vllm

    if not cpu_platform.is_cpu():
        pytest.skip("the version check only runs on the CPU platform")
    monkeypatch.delenv(plugin.DISABLE_ENV, raising=False)
    monkeypatch.setattr(vllm, "__version__", "0.33.0")
    with pytest.raises(RuntimeError, match=r"supports vLLM 0\.32\.0 only, found 0\.33\.0"):
        plugin.register()


def test_check_version_accepts_the_pinned_one() -> None:
    plugin.check_version(plugin.SUPPORTED_VLLM_VERSION)


def test_disabled_by_env_is_a_no_op(monkeypatch: pytest.MonkeyPatch, cpu_platform) -> None:
    import vllm

    monkeypatch.setenv(plugin.DISABLE_ENV, "0")
    monkeypatch.setattr(vllm, "__version__", "0.0.1")
    before = type(cpu_platform).get_punica_wrapper
    plugin.register()
    assert type(cpu_platform).get_punica_wrapper == before


def test_does_nothing_off_cpu(monkeypatch: pytest.MonkeyPatch, cpu_platform) -> None:
    import vllm

    monkeypatch.delenv(plugin.DISABLE_ENV, raising=False)
    monkeypatch.setattr(type(cpu_platform), "is_cpu", lambda self: False)
    monkeypatch.setattr(vllm, "__version__", "0.0.1")
    before = type(cpu_platform).get_punica_wrapper
    plugin.register()
    assert type(cpu_platform).get_punica_wrapper == before


def test_register_is_idempotent(monkeypatch: pytest.MonkeyPatch, cpu_platform) -> None:
    if not cpu_platform.is_cpu():
        pytest.skip("patches the CPU platform only")
    monkeypatch.delenv(plugin.DISABLE_ENV, raising=False)
    plugin.register()
    plugin.register()
    assert cpu_platform.get_punica_wrapper() == plugin.WRAPPER_QUALNAME
    from vllm.lora.punica_wrapper.punica_selector import get_punica_wrapper

    wrapper = get_punica_wrapper(64, 4, "cpu")
    assert type(wrapper).__name__ == "GroupedPunicaWrapperCPU"
