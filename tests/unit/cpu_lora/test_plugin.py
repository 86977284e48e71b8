"""The plugin's switches: version pin, opt-out, platform check, idempotent patching."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.inference.cpu_lora import plugin


@pytest.fixture
def cpu_platform(monkeypatch: pytest.MonkeyPatch):
    """The current platform class, with `get_punica_wrapper` restored after the test."""
    from vllm.platforms import current_platform

    platform_cls = type(current_platform)
    for name in ("get_punica_wrapper", "check_and_update_config"):
        monkeypatch.setattr(platform_cls, name, platform_cls.__dict__[name])
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


def _config(**lora: object) -> SimpleNamespace:
    parallel = SimpleNamespace(tensor_parallel_size=1, pipeline_parallel_size=1)
    lora_config = SimpleNamespace(**{"fully_sharded_loras": False, **lora})
    return SimpleNamespace(lora_config=lora_config, parallel_config=parallel)


def test_compile_with_lora_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(plugin.COMPILE_ENV, raising=False)
    assert plugin.compile_with_lora(_config())
    assert not plugin.compile_with_lora(SimpleNamespace(lora_config=None))
    assert not plugin.compile_with_lora(_config(fully_sharded_loras=True))
    sharded = _config()
    sharded.parallel_config.tensor_parallel_size = 2
    assert not plugin.compile_with_lora(sharded)
    monkeypatch.setenv(plugin.COMPILE_ENV, "0")
    assert not plugin.compile_with_lora(_config())


def test_platform_hook_keeps_compilation_with_lora(
    monkeypatch: pytest.MonkeyPatch, cpu_platform
) -> None:
    """The patched hook runs the original with `lora_config` hidden, then restores it."""
    if not cpu_platform.is_cpu():
        pytest.skip("patches the CPU platform only")
    monkeypatch.delenv(plugin.DISABLE_ENV, raising=False)
    monkeypatch.delenv(plugin.COMPILE_ENV, raising=False)
    seen = []

    def original(cls, vllm_config) -> None:
        seen.append(vllm_config.lora_config)

    monkeypatch.setattr(type(cpu_platform), "check_and_update_config", classmethod(original))
    plugin.register()
    plugin.register()
    config = _config()
    lora_config = config.lora_config
    cpu_platform.check_and_update_config(config)
    assert seen == [None] and config.lora_config is lora_config
    monkeypatch.setenv(plugin.COMPILE_ENV, "0")
    cpu_platform.check_and_update_config(config)
    assert seen == [None, lora_config]


@pytest.fixture
def kv_config_class(monkeypatch: pytest.MonkeyPatch):
    """vLLM's KVCacheConfig with its own `needs_kv_cache_zeroing` (restored after the test)."""
    from vllm.v1.kv_cache_interface import KVCacheConfig

    current = KVCacheConfig.__dict__["needs_kv_cache_zeroing"]
    original = getattr(current.fget, "loraplex_original", current)
    monkeypatch.setattr(KVCacheConfig, "needs_kv_cache_zeroing", original)
    return KVCacheConfig


@pytest.mark.parametrize("switch", ["1", "0"])
def test_new_kv_blocks_are_zeroed_on_the_cpu_even_with_the_ops_off(
    monkeypatch: pytest.MonkeyPatch, cpu_platform, kv_config_class, switch: str
) -> None:
    """Freed blocks keep their values and the CPU attention kernel reads masked slots (0 * NaN):
    every new block must be zeroed, whichever LoRA ops run (issue 12)."""
    if not cpu_platform.is_cpu():
        pytest.skip("patches the CPU platform only")
    config = kv_config_class(num_blocks=4, kv_cache_tensors=[], kv_cache_groups=[])
    assert not config.needs_kv_cache_zeroing, "vLLM zeroes only for Mamba / mixed precision"
    monkeypatch.setenv(plugin.DISABLE_ENV, switch)
    plugin.register()
    plugin.register()
    assert config.needs_kv_cache_zeroing
    original = kv_config_class.__dict__["needs_kv_cache_zeroing"].fget.loraplex_original
    assert not original.fget(config), "patched once, over vLLM's own property"
