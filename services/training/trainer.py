"""The training loop a worker runs: packed micro-batches, checkpoints, evaluation, artifact.

It knows nothing of gRPC or the database: it reads rows and a spec, reports events
through a callback and writes its checkpoints and result under the job folder.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from services.training import evaluation, methods
from services.training.batching import Example, encode, make_batch, real_tokens
from services.training.spec import PROMPT_METHODS, JobSpec

log = logging.getLogger(__name__)

Emit = Callable[..., None]


class StopTraining(Exception):
    """Raised between steps when the worker is asked to stop."""


class TrainingError(Exception):
    """A failure the user can act on; the message says what to change."""


@dataclass
class Splits:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]] = field(default_factory=list)
    test: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoopState:
    step: int = 0
    best_validation: float = math.inf
    evals_without_improvement: int = 0
    general_perplexity_before: float = math.nan
    last_train_loss: float = math.nan


class Trainer:
    """Fine-tunes one base model with one method on one set of splits."""

    def __init__(
        self,
        spec: JobSpec,
        base_dir: Path,
        job_dir: Path,
        emit: Emit,
        should_stop: Callable[[], str] = lambda: "",
    ) -> None:
        self.spec = spec
        self.hp = spec.hyperparameters
        self.base_dir = base_dir
        self.job_dir = job_dir
        self.emit = emit
        self.should_stop = should_stop
        self.checkpoint_dir = job_dir / "checkpoint"
        self.init_dir = job_dir / "pissa_init"
        self.pack = spec.method not in PROMPT_METHODS
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # Setup
    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(self.hp.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_dir)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.model = AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=torch.float32)
        self.model.to(self.device)

    def _encode(self, splits: Splits) -> None:
        max_len = self.hp.max_seq_length
        try:
            self.train_examples = encode(self.tokenizer, splits.train, self.spec.task, max_len)
            self.val_examples = encode(self.tokenizer, splits.validation, self.spec.task, max_len)
            self.test_examples = encode(self.tokenizer, splits.test, self.spec.task, max_len)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        if not self.train_examples:
            raise TrainingError(
                "no training example has answer tokens left after truncation:"
                " raise max_seq_length or shorten the prompts"
            )

    def _plan(self) -> None:
        self.batches_per_epoch = math.ceil(len(self.train_examples) / self.hp.batch_size)
        accum = self.hp.gradient_accumulation_steps
        planned = math.ceil(self.hp.epochs * self.batches_per_epoch / accum)
        self.total_steps = max(1, self.hp.max_steps or planned)
        default_interval = max(1, self.total_steps // 4)
        self.eval_interval = self.hp.eval_interval_steps or default_interval
        self.checkpoint_interval = self.hp.checkpoint_interval_steps or default_interval

    def _optimizer(self) -> None:
        from transformers import get_scheduler

        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=self.hp.learning_rate, weight_decay=self.hp.weight_decay
        )
        self.scheduler = get_scheduler(
            self.hp.scheduler,
            self.optimizer,
            num_warmup_steps=int(self.hp.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )

    # Data order: a seeded permutation per epoch, so a resumed job replays the same batches.
    def _micro_batches(self, start: int) -> Iterator[list[Example]]:
        index = start
        while True:
            epoch, offset = divmod(index, self.batches_per_epoch)
            order = list(range(len(self.train_examples)))
            random.Random(self.hp.seed + epoch).shuffle(order)
            size = self.hp.batch_size
            chunk = order[offset * size : (offset + 1) * size]
            yield [self.train_examples[i] for i in chunk]
            index += 1

    # Checkpoints
    def _save_checkpoint(self, state: LoopState) -> None:
        tmp = self.job_dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(methods.trainable_state(self.model), tmp / "trainable.safetensors")
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": torch.get_rng_state(),
            },
            tmp / "optimizer.pt",
        )
        (tmp / "state.json").write_text(json.dumps(state.__dict__))
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        tmp.rename(self.checkpoint_dir)
        self.emit("checkpoint", step=state.step)

    def _restore(self) -> LoopState | None:
        if not (self.checkpoint_dir / "state.json").exists():
            return None
        methods.load_trainable_state(
            self.model, load_file(self.checkpoint_dir / "trainable.safetensors")
        )
        extra = torch.load(self.checkpoint_dir / "optimizer.pt", weights_only=True)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng"])
        return LoopState(**json.loads((self.checkpoint_dir / "state.json").read_text()))

    # The loop
    def run(self, splits: Splits) -> dict[str, Any]:
        self._load()
        self._encode(splits)
        self._test_rows = splits.test
        self._plan()
        resuming = (self.checkpoint_dir / "state.json").exists()
        before = math.nan
        if not resuming:
            before = evaluation.general_perplexity(
                self.model, self.tokenizer, self.hp.max_seq_length, self.pad_id
            )
        self.model = methods.prepare_model(
            self.model, self.spec, None if resuming else self.init_dir
        )
        self._optimizer()
        state = self._restore() or LoopState(general_perplexity_before=before)
        self.emit("started", total_steps=self.total_steps, resumed_from_step=state.step)
        best = self._train(state)
        return self._finish(state, best)

    def _train(self, state: LoopState) -> dict[str, torch.Tensor] | None:
        accum = self.hp.gradient_accumulation_steps
        batches = self._micro_batches(state.step * accum)
        started = time.perf_counter()
        first_step = state.step
        best: dict[str, torch.Tensor] | None = None
        self.model.train()
        while state.step < self.total_steps:
            reason = self.should_stop()
            if reason:
                if reason == "shutdown":
                    self._save_checkpoint(state)
                raise StopTraining(reason)
            step_start = time.perf_counter()
            loss_sum, tokens = 0.0, 0
            for _ in range(accum):
                examples = next(batches)
                batch = make_batch(examples, self.pack, self.pad_id)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                loss = self.model(**batch, use_cache=False).loss / accum
                loss.backward()
                loss_sum += float(loss.detach())
                tokens += real_tokens(examples)
            if not math.isfinite(loss_sum):
                raise TrainingError(
                    f"the training loss became {loss_sum} at step {state.step + 1}:"
                    " lower learning_rate or raise warmup_ratio"
                )
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], 1.0
            )
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.last_train_loss = loss_sum
            elapsed = time.perf_counter() - step_start
            per_step = (time.perf_counter() - started) / (state.step - first_step)
            self.emit(
                "step",
                step=state.step,
                total_steps=self.total_steps,
                loss=loss_sum,
                learning_rate=lr,
                tokens_per_second=tokens / max(elapsed, 1e-9),
                eta_seconds=per_step * (self.total_steps - state.step),
                epoch=state.step * accum / self.batches_per_epoch,
            )
            if self.val_examples and state.step % self.eval_interval == 0:
                if self._validate(state):
                    best = methods.trainable_state(self.model)
                elif 0 < self.hp.early_stopping_patience <= state.evals_without_improvement:
                    self.emit("early_stopped", step=state.step)
                    return best
            if state.step % self.checkpoint_interval == 0 and state.step < self.total_steps:
                self._save_checkpoint(state)
        return None

    def _validate(self, state: LoopState) -> bool:
        """Runs validation; True when it is the best so far."""
        loss = evaluation.mean_loss(
            self.model, self.val_examples, self.hp.batch_size, self.pack, self.pad_id
        )
        metrics = evaluation.loss_metrics("validation", loss)
        self.emit("evaluation", split="validation", step=state.step, metrics=metrics)
        if loss < state.best_validation:
            state.best_validation = loss
            state.evals_without_improvement = 0
            return True
        state.evals_without_improvement += 1
        return False

    def _finish(self, state: LoopState, best: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        if best is not None:
            methods.load_trainable_state(self.model, best)
        metrics: dict[str, float] = {"train_loss": state.last_train_loss, "steps": state.step}
        trainable, total = methods.count_parameters(self.model)
        metrics["trainable_parameters"] = float(trainable)
        metrics["trainable_share"] = trainable / total
        if self.val_examples:
            loss = evaluation.mean_loss(
                self.model, self.val_examples, self.hp.batch_size, self.pack, self.pad_id
            )
            metrics.update(evaluation.loss_metrics("validation", loss))
        if self.test_examples:
            loss = evaluation.mean_loss(
                self.model, self.test_examples, self.hp.batch_size, self.pack, self.pad_id
            )
            test = evaluation.loss_metrics("test", loss)
            if self.spec.task == "instruction":
                test["test_exact_match"] = evaluation.exact_match(
                    self.model, self.tokenizer, self._test_rows
                )
            self.emit("evaluation", split="test", step=state.step, metrics=test)
            metrics.update(test)
        after = evaluation.general_perplexity(
            self.model, self.tokenizer, self.hp.max_seq_length, self.pad_id
        )
        general = {
            "general_perplexity_before": state.general_perplexity_before,
            "general_perplexity_after": after,
            "forgetting_ratio": after / state.general_perplexity_before,
        }
        self.emit("evaluation", split="general", step=state.step, metrics=general)
        metrics.update(general)
        kind = methods.save_artifact(
            self.model, self.tokenizer, self.spec, self.job_dir / "artifact", self.init_dir
        )
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        return {"metrics": metrics, "artifact_kind": kind}
