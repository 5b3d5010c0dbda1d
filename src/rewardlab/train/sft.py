"""Supervised priming: teach the model the task's format (and whatever the demonstrations know) so that
reinforcement learning starts from rewards that are not all zero.

The loss is cross-entropy on the completion tokens only; the prompt is context. Completions end with
the chat template's end-of-turn token, which is also where sampling stops.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rewardlab.config import SFTConfig
from rewardlab.console import progress
from rewardlab.envs.dataset import row_to_example
from rewardlab.envs.registry import load_environment_for
from rewardlab.errors import DatasetError
from rewardlab.eval.run_report import write_run_report
from rewardlab.models.chat import ChatRenderer
from rewardlab.models.forward import forward_for
from rewardlab.models.loading import LoraSettings, describe_model, load_model
from rewardlab.runs import RunStore, collect_manifest
from rewardlab.runs.overlap import record_training_data
from rewardlab.trackers import Trackers, require_trackers
from rewardlab.train.budget import Budget, parameter_count
from rewardlab.train.common import make_optimizer, make_scheduler, pad_sequences, set_seed
from rewardlab.types import Messages


@dataclass
class SFTResult:
    run_id: str
    model_dir: Path
    final_loss: float
    wall_seconds: float
    stopped: str | None = None  # why the budget stopped the run (status "stopped")


class Demonstrations:
    """Where SFT targets come from: fixed (prompt, completion) pairs from a JSONL file, or the
    environment's teacher, asked afresh for every draw (a stochastic teacher gives varied targets)."""

    def __init__(self, config: SFTConfig, renderer: ChatRenderer):
        self.renderer = renderer
        self.env = None
        self._completions: dict[str, list[int]] = {}
        if config.data is None:
            self.env = load_environment_for(config.env.name, config.env.args, config.model.name_or_path)
            examples = self.env.examples("train")
            self.prompts = [e.prompt for e in examples]
            self.examples = examples
            self.fixed = None
        else:
            pairs = read_pairs(Path(config.data))
            self.prompts = [prompt for prompt, _ in pairs]
            self.fixed = [completion for _, completion in pairs]
        self.prompt_ids = [encode_prompt(renderer, prompt) for prompt in self.prompts]

    def __len__(self) -> int:
        return len(self.prompts)

    def records(self) -> list[tuple[Messages, str | None]]:
        """(prompt, answer) of every demonstration; a JSONL of prompts and completions has no answers."""
        if self.fixed is not None:
            return [(prompt, None) for prompt in self.prompts]
        return [(example.prompt, example.answer) for example in self.examples]

    def draw(self, index: int, rng: random.Random) -> tuple[list[int], list[int]]:
        text = (
            self.fixed[index] if self.fixed is not None else self.env.demonstration(self.examples[index], rng)
        )
        if text not in self._completions:
            self._completions[text] = encode_completion(self.renderer, self.prompts[index], text)
        return self.prompt_ids[index], self._completions[text]


def read_pairs(path: Path) -> list[tuple[Messages, str]]:
    """(prompt messages, completion) rows of a JSONL file, each problem named by its line."""
    if not path.is_file():
        raise DatasetError(f"SFT data file not found: {path}")
    pairs = []
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("completion"), str):
                raise DatasetError(f"{where}: row has no string 'completion'")
            pairs.append((row_to_example(row, where).prompt, row["completion"]))
    if not pairs:
        raise DatasetError(f"{path}: no rows")
    return pairs


def encode_prompt(renderer: ChatRenderer, prompt: Messages) -> list[int]:
    return renderer.encode(renderer.render(prompt, add_generation_prompt=True))


def encode_completion(renderer: ChatRenderer, prompt: Messages, completion: str) -> list[int]:
    """The completion's ids as the chat template renders the reply, cut after its end-of-turn token."""
    prompt_text = renderer.render(prompt, add_generation_prompt=True)
    full_text = renderer.render(
        [*prompt, {"role": "assistant", "content": completion}], add_generation_prompt=False
    )
    if not full_text.startswith(prompt_text):
        raise DatasetError("chat template renders the prompt differently once a reply follows it")
    completion_ids = renderer.encode(full_text[len(prompt_text) :])
    stops = renderer.stop_token_ids
    end = next((i + 1 for i, t in enumerate(completion_ids) if t in stops), None)
    if end is not None:
        return completion_ids[:end]
    eos = renderer.tokenizer.eos_token_id
    return completion_ids + ([eos] if eos is not None else [])


def run_sft(config: SFTConfig, store: RunStore | None = None, parent: str | None = None) -> SFTResult:
    started = time.perf_counter()
    set_seed(config.seed)
    store = store or RunStore(config.runs_dir)
    require_trackers(config.report_to)  # a missing tracker library is said before the model loads
    lora = LoraSettings.from_config(config.lora)  # None: full fine-tuning
    model, tokenizer = load_model(
        config.model.name_or_path, config.model.dtype, config.model.device, lora=lora, trainable=True
    )
    forward = forward_for(model)
    data = Demonstrations(config, ChatRenderer(tokenizer))
    manifest = collect_manifest(config.seed, {"model": describe_model(config.model.name_or_path)})
    run = store.create_run("sft", config.model_dump(), manifest, name=config.run_name, parent=parent)
    record_training_data(run.dir, data.records())
    trackers = Trackers(config.report_to, run, config.model_dump(), store.root)  # what the store gets, too

    model.train()
    optimizer = make_optimizer(
        model, config.optimizer.learning_rate, config.optimizer.weight_decay, config.optimizer.betas
    )
    scheduler = make_scheduler(
        optimizer, config.optimizer.lr_scheduler, config.optimizer.warmup_steps, config.max_steps
    )
    device = next(model.parameters()).device
    order_rng = random.Random(config.seed)
    teacher_rng = random.Random(f"teacher:{config.seed}")
    order: list[int] = []
    loss_value = float("nan")
    budget = Budget(config.budget, {}, parameter_count(model), started)
    stopped = None
    with trackers, progress("sft", config.max_steps) as advance:
        for step in range(1, config.max_steps + 1):
            if len(order) < config.batch_size:  # a new epoch, reshuffled
                fresh = list(range(len(data)))
                order_rng.shuffle(fresh)
                order.extend(fresh)
            batch = [data.draw(i, teacher_rng) for i in order[: config.batch_size]]
            del order[: config.batch_size]
            prompts = [p for p, _ in batch]
            completions = [c for _, c in batch]
            input_ids, attention, mask, start = pad_sequences(
                prompts, completions, [[1] * len(c) for c in completions], tokenizer.pad_token_id, device
            )
            logits = forward.suffix_logits(input_ids, attention, start)
            targets = input_ids[:, start:]
            token_loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            ).view_as(mask)
            loss = (token_loss * mask).sum() / mask.sum()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            costs = budget.sft_step(sum(map(len, prompts)), sum(map(len, completions)))
            stopped = budget.check(store, run.id, step).stop  # SFT keeps no checkpoint: it ends here
            if step % config.log_every == 0 or step == config.max_steps or stopped:
                metrics = {
                    "loss": loss_value,
                    "grad_norm": float(grad_norm),
                    "learning_rate": scheduler.get_last_lr()[0],
                    **costs,
                }
                store.log_metrics(run.id, step, metrics)
                trackers.log(step, metrics)
            advance(loss=loss_value)
            if stopped:
                break

    model_dir = run.dir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    wall = time.perf_counter() - started
    store.finish(
        run.id,
        status="stopped" if stopped else "completed",
        summary={
            "final_loss": loss_value,
            "model_dir": str(model_dir),
            "examples": len(data),
            "wall_seconds": wall,
            "cost": budget.summary(),
        },
    )
    trackers.finish("stopped" if stopped else "completed")
    write_run_report(store, run.id)
    return SFTResult(run.id, model_dir, loss_value, wall, stopped)
