"""A job's specification as plain data: defaults per method and validation up front.

The worker reads the same structure from `job.json`, so everything here is plain
JSON-able dataclasses; nothing imports torch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument

METHODS = (
    "lora",
    "qlora",
    "ia3",
    "prompt_tuning",
    "prefix_tuning",
    "p_tuning",
    "full",
    "last_layers",
)
TASKS = ("instruction", "continued_pretraining")
SCHEDULERS = ("linear", "cosine", "constant")
ADAPTER_METHODS = frozenset({"lora", "qlora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning"})
PROMPT_METHODS = frozenset({"prompt_tuning", "prefix_tuning", "p_tuning"})
# Used with fullmatch, never `$`: `$` also matches before a trailing newline.
_ADAPTER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}/[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BASE_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127})?")
# A peft module name, or a dotted path to one: never a path or a pattern.
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}(\.[A-Za-z0-9_]{1,128}){0,15}")
MAX_TARGET_MODULES = 64
MAX_LORA_ALPHA = 65536.0
MAX_DATASET_WEIGHT = 1e6
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_TRAINABLE_LAST_LAYERS = 1024

# Learning rates that work out of the box: adapters tolerate much larger steps.
DEFAULT_LEARNING_RATE = {
    "lora": 2e-4,
    "qlora": 2e-4,
    "ia3": 3e-2,
    "prompt_tuning": 3e-2,
    "prefix_tuning": 1e-2,
    "p_tuning": 1e-2,
    "full": 5e-4,
    "last_layers": 1e-3,
}


@dataclass
class Hyperparameters:
    learning_rate: float = 0.0
    scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    epochs: float = 3.0
    max_steps: int = 0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    max_seq_length: int = 512
    seed: int = 42
    eval_interval_steps: int = 0
    early_stopping_patience: int = 0
    checkpoint_interval_steps: int = 0
    trainable_last_layers: int = 2


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=list)
    init: str = ""
    last_layers: int = 0  # adapt only the last N decoder layers; 0 = all


@dataclass
class PublishSettings:
    adapter_name: str = ""
    promote_alias: str = ""
    promote_if: str = ""


@dataclass
class DatasetInput:
    dataset_id: str
    weight: float = 1.0


@dataclass
class JobSpec:
    """What a job trains, on what, and how; `with_defaults` fills every zero."""

    base_model: str
    train: list[DatasetInput]
    method: str = "lora"
    task: str = "instruction"
    validation_dataset_id: str = ""
    test_dataset_id: str = ""
    validation_ratio: float = 0.0
    test_ratio: float = 0.0
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    lora: LoraSettings = field(default_factory=LoraSettings)
    num_virtual_tokens: int = 16
    publish: PublishSettings = field(default_factory=PublishSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        data = dict(data)
        data["train"] = [DatasetInput(**d) for d in data.get("train", [])]
        data["hyperparameters"] = Hyperparameters(**data.get("hyperparameters", {}))
        data["lora"] = LoraSettings(**data.get("lora", {}))
        data["publish"] = PublishSettings(**data.get("publish", {}))
        return cls(**data)

    @property
    def produces_adapter(self) -> bool:
        return self.method in ADAPTER_METHODS


def with_defaults(spec: JobSpec) -> JobSpec:
    """Fills zeros with the method's defaults; the stored spec is the one that ran."""
    spec = JobSpec.from_dict(spec.to_dict())
    hp = spec.hyperparameters
    hp.learning_rate = hp.learning_rate or DEFAULT_LEARNING_RATE.get(spec.method, 2e-4)
    hp.scheduler = hp.scheduler or "cosine"
    hp.epochs = hp.epochs or 3.0
    hp.batch_size = hp.batch_size or 8
    hp.max_seq_length = hp.max_seq_length or 512
    hp.trainable_last_layers = hp.trainable_last_layers or 2
    spec.lora.rank = spec.lora.rank or 8
    spec.lora.alpha = spec.lora.alpha or 2.0 * spec.lora.rank
    spec.num_virtual_tokens = spec.num_virtual_tokens or 16
    for item in spec.train:
        item.weight = item.weight or 1.0
    single = len(spec.train) == 1
    if not spec.validation_dataset_id and not spec.validation_ratio and single:
        spec.validation_ratio = 0.1
    if not spec.test_dataset_id and not spec.test_ratio and single:
        spec.test_ratio = 0.1
    return spec


def validate(spec: JobSpec, tenant: str) -> None:
    """Refuses a spec before anything is queued, with a message that says what to change."""
    if spec.method not in METHODS:
        raise InvalidArgument(f"method {spec.method!r} is unknown; use one of {', '.join(METHODS)}")
    if spec.task not in TASKS:
        raise InvalidArgument(f"task {spec.task!r} is unknown; use one of {', '.join(TASKS)}")
    if not _BASE_MODEL.fullmatch(spec.base_model) or ".." in spec.base_model:
        raise InvalidArgument("base_model must be a model name such as 'org/model'")
    if not spec.train:
        raise InvalidArgument("a job needs at least one training dataset in 'train'")
    hp = spec.hyperparameters
    checks = [
        (0 < hp.learning_rate < 1, "learning_rate must be in (0, 1)"),
        (hp.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}"),
        (0 <= hp.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
        (0 < hp.epochs <= 1000, "epochs must be in (0, 1000]"),
        (hp.max_steps >= 0, "max_steps must not be negative"),
        (1 <= hp.batch_size <= 1024, "batch_size must be in [1, 1024]"),
        (
            1 <= hp.gradient_accumulation_steps <= 1024,
            "gradient_accumulation_steps must be in [1, 1024] (unset: 1)",
        ),
        (0 <= hp.weight_decay < 1, "weight_decay must be in [0, 1)"),
        (8 <= hp.max_seq_length <= 131072, "max_seq_length must be in [8, 131072]"),
        (hp.eval_interval_steps >= 0, "eval_interval_steps must not be negative"),
        (hp.early_stopping_patience >= 0, "early_stopping_patience must not be negative"),
        (hp.checkpoint_interval_steps >= 0, "checkpoint_interval_steps must not be negative"),
        (0 <= spec.validation_ratio < 1, "validation_ratio must be in [0, 1)"),
        (0 <= spec.test_ratio < 1, "test_ratio must be in [0, 1)"),
        (spec.validation_ratio + spec.test_ratio < 0.9, "validation+test ratios leave no train"),
        (0 <= hp.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}]"),
        (
            1 <= hp.trainable_last_layers <= MAX_TRAINABLE_LAST_LAYERS,
            f"trainable_last_layers must be in [1, {MAX_TRAINABLE_LAST_LAYERS}] (0 means 2)",
        ),
        (1 <= spec.lora.rank <= 1024, "lora.rank must be in [1, 1024]"),
        (
            0 < spec.lora.alpha <= MAX_LORA_ALPHA,
            f"lora.alpha must be a number in (0, {MAX_LORA_ALPHA:g}] (0 means twice the rank)",
        ),
        (0 <= spec.lora.dropout < 1, "lora.dropout must be in [0, 1)"),
        (spec.lora.init in ("", "pissa", "loftq"), "lora.init must be '', 'pissa' or 'loftq'"),
        (
            0 <= spec.lora.last_layers <= MAX_TRAINABLE_LAST_LAYERS,
            f"lora.last_layers must be in [0, {MAX_TRAINABLE_LAST_LAYERS}] (0 adapts every layer)",
        ),
        (1 <= spec.num_virtual_tokens <= 512, "num_virtual_tokens must be in [1, 512]"),
        (
            all(0 < d.weight <= MAX_DATASET_WEIGHT for d in spec.train),
            f"dataset weights must be numbers in (0, {MAX_DATASET_WEIGHT:g}]",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise InvalidArgument(message)
    _validate_target_modules(spec.lora.target_modules)
    _validate_publish(spec, tenant)
    _check_hardware(spec)


def _validate_target_modules(modules: list[str]) -> None:
    if len(modules) > MAX_TARGET_MODULES:
        raise InvalidArgument(
            f"lora.target_modules lists {len(modules)} names, at most {MAX_TARGET_MODULES}"
        )
    for name in modules:
        if not _MODULE_NAME.fullmatch(name):
            raise InvalidArgument(
                f"lora.target_modules entry {name[:60]!r} is not a module name: use names such"
                " as 'q_proj' or 'self_attn.q_proj' (letters, digits, '_' and '.')"
            )


def _validate_publish(spec: JobSpec, tenant: str) -> None:
    from services.training.publisher import parse_gate

    publish = spec.publish
    if not publish.adapter_name:
        if publish.promote_alias or publish.promote_if:
            raise InvalidArgument("promote_alias/promote_if need publish.adapter_name")
        return
    if not _ADAPTER_NAME.fullmatch(publish.adapter_name):
        raise InvalidArgument("publish.adapter_name must look like 'tenant/name'")
    if publish.adapter_name.split("/", 1)[0] != tenant:
        raise InvalidArgument(f"publish.adapter_name must start with your tenant, '{tenant}/'")
    if publish.promote_if:
        parse_gate(publish.promote_if)
        if not publish.promote_alias:
            raise InvalidArgument("promote_if needs promote_alias: the alias the gate moves")


def _check_hardware(spec: JobSpec) -> None:
    """Methods that need CUDA bitsandbytes are refused here, not half-way through a run."""
    needs_bnb = spec.method == "qlora" or (spec.method == "lora" and spec.lora.init == "loftq")
    if not needs_bnb:
        return
    what = "QLoRA" if spec.method == "qlora" else "LoftQ initialisation"
    if importlib.util.find_spec("bitsandbytes") is None:
        raise FailedPrecondition(
            f"{what} needs CUDA bitsandbytes, which this training service does not have;"
            " use method LORA (or init 'pissa'), or run the job on a GPU deployment"
        )
    import torch

    if not torch.cuda.is_available():
        raise FailedPrecondition(f"{what} needs a CUDA GPU and this training service has none")
