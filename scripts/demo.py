"""The main job on the embedded defaults: start the suite and run it end to end.

For now the suite is the registry: two tenants push, list, alias and pull real
PEFT LoRA adapters over gRPC through the `loraplex` CLI, and each sees only its
own. Everything lives under `.loraplex/demo` and is rebuilt on every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.common.testing import free_port, service_process  # noqa: E402
from services.registry.app import SERVICE_NAME as REGISTRY  # noqa: E402

DATA = ROOT / ".loraplex" / "demo"
CLI = [str(Path(sys.executable).parent / "loraplex")]


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def loraplex(*args: str, key: str, env: dict[str, str], check: bool = True) -> int:
    print(f"$ loraplex {' '.join(args)}", flush=True)
    result = subprocess.run([*CLI, *args], env={**env, "LORAPLEX_API_KEY": key})
    if check and result.returncode:
        raise SystemExit(f"demo failed at: loraplex {' '.join(args)}")
    return result.returncode


def create_key(tenant: str, env: dict[str, str]) -> str:
    output = subprocess.run(
        [*CLI, "keys", "create", "--tenant", tenant], env=env, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    return output.stdout.strip().splitlines()[-1]


def make_adapter(folder: Path, seed: int) -> Path:
    """A real LoRA adapter from peft on a tiny Llama (random weights: no hub needed)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.config.name_or_path = "loraplex/tiny-llama"
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    peft_model.save_pretrained(folder)
    return folder


def main() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    port = free_port() if os.environ.get("CI") else 50051
    env = {
        **os.environ,
        "LORAPLEX_DATA_DIR": str(DATA),
        "LORAPLEX_REGISTRY_PORT": str(port),
        "LORAPLEX_REGISTRY_ADDR": f"127.0.0.1:{port}",
        "LORAPLEX_REGISTRY_METRICS_PORT": "0",
        "LORAPLEX_LOG_LEVEL": "WARNING",
    }

    step("API keys for two tenants (only their sha256 is stored)")
    acme, globex = create_key("acme", env), create_key("globex", env)

    step("start the registry")
    with service_process("services.registry", REGISTRY, env, port):
        print(f"registry ready on 127.0.0.1:{port}")
        step("build two real LoRA adapters with peft")
        v1 = make_adapter(DATA / "adapters" / "support-v1", seed=1)
        v2 = make_adapter(DATA / "adapters" / "support-v2", seed=2)

        step("acme pushes two versions, aliases v1 as prod")
        loraplex("registry", "push", "acme/support", str(v1), "--lineage", "dataset=handbook-v1",
                 "--metric", "test_loss=1.82", key=acme, env=env)  # fmt: skip
        loraplex("registry", "push", "acme/support", str(v2), "--metric", "test_loss=1.41",
                 key=acme, env=env)  # fmt: skip
        loraplex("registry", "alias", "acme/support", "prod", "1", key=acme, env=env)
        step("globex pushes its own adapter")
        loraplex("registry", "push", "globex/support", str(v2), key=globex, env=env)

        step("each tenant lists only its own adapters")
        loraplex("registry", "list", key=acme, env=env)
        loraplex("registry", "list", key=globex, env=env)

        step("promote v2 to prod, pull it back verified")
        loraplex("registry", "alias", "acme/support", "prod", "2", key=acme, env=env)
        loraplex("registry", "pull", "acme/support@prod", str(DATA / "pulled"), key=acme, env=env)
        loraplex("registry", "versions", "acme/support", key=acme, env=env)

        step("globex cannot see acme's adapter: NOT_FOUND, exit code 4")
        code = loraplex("registry", "show", "acme/support", key=globex, env=env, check=False)
        if code != 4:
            raise SystemExit(f"expected exit code 4 for another tenant's adapter, got {code}")

    step("done: the registry stopped gracefully; data is in .loraplex/demo")


if __name__ == "__main__":
    main()
