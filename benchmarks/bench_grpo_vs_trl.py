"""rewardlab's GRPO trainer and TRL's ``GRPOTrainer``, side by side, on the same model, data and reward.

Both trainers start from identical copies of one saved model (a tiny model built with
``save_tiny_model`` and briefly primed with SFT, so rewards are not all zero), get the same LoRA adapter
(same seed, so the same initial weights), see the same prompts at every step (rewardlab's
``examples_for_step`` order, given to TRL as an unshuffled dataset), sample the same number of completions
per prompt with the same temperature and length limit, and are scored by the same rubric (the arithmetic
environment: exact answer + 0.1 x format). Loss settings are ones both support identically: ``dapo``
aggregation, epsilon 0.2 on both sides, beta 0, one optimizer step per batch of rollouts, rewards scaled
by the group std, AdamW (betas 0.9/0.99, no weight decay), constant learning rate, grad-norm clip 1.0.
TRL generates with its own ``model.generate`` (no vLLM), does not evaluate, save or print, and runs with
gradient checkpointing and bf16 autocast off (both on by default in TRL), as rewardlab does.

Every run is a fresh subprocess, so its peak RSS is its own, and the trainers alternate
(rewardlab, TRL, rewardlab, TRL, ... one seed per pair) so that machine drift hits both alike. A step's
time is the interval between the ends of consecutive optimizer steps (everything the trainer does in a
step, logging included); the first ``warmup`` steps, which also absorb setup and first-call costs, are
not timed. The same invocation measures the machine's matmul throughput and reports each trainer's
step time as a multiple of the step's FLOP floor (see :func:`step_flops`).

``python benchmarks/bench_grpo_vs_trl.py --help``; ``BENCHMARKS.md`` has the exact commands and results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

# Nothing may be downloaded: both trainers get local paths and objects only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("REWARDLAB_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULT_MARKER = "BENCH-RESULT "
TRAINERS = ("rewardlab", "trl")
QWEN_SHAPE = "qwen2.5-0.5b"
# Qwen2.5-0.5B's dimensions (config only, random weights, the tiny character tokenizer): a GPU-sized model
# without downloading anything.
QWEN_05B_DIMENSIONS = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)
# The demo's task: careless demonstrations to prime on, an exact checker to learn from.
ENV_ARGS = {"level": 2, "teacher": "careless", "slip_rate": 0.7}


@dataclass(frozen=True)
class BenchConfig:
    """One row of the table: what both trainers run, identically."""

    name: str
    model_shape: str  # a rewardlab tiny model name, or "qwen2.5-0.5b"
    device: str = "cpu"
    dtype: str = "float32"
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 8
    temperature: float = 1.0
    learning_rate: float = 2e-3
    loss_type: str = "dapo"
    epsilon: float = 0.2
    lora_rank: int = 16  # 0: full fine-tuning on both
    lora_alpha: float = 32.0
    steps: int = 30
    warmup: int = 3  # the first steps, not timed
    sft_steps: int = 1000  # priming, once, cached; 0: start from the random-weight model
    sft_learning_rate: float = 1e-3
    prompt_style: str = "terse"  # "chat" for a real instruct model: instructions and its chat template
    draw: str = "multinomial"  # rewardlab's sampling.draw (TRL always draws with torch.multinomial)


# A real pretrained model (rewardlab models fetch smollm2-135m): its own tokenizer and chat template,
# unprimed (the instruct model as it comes; throughput does not depend on the rewards).
SMOLLM2 = BenchConfig(
    "smollm2-135m", "smollm2-135m", prompts_per_step=4, max_new_tokens=32, learning_rate=1e-4, steps=6,
    warmup=2, sft_steps=0, prompt_style="chat",
)  # fmt: skip

CONFIGS: dict[str, BenchConfig] = {
    "tiny": BenchConfig("tiny", "tiny"),
    "tiny-25m": BenchConfig(
        "tiny-25m", "tiny-25m", learning_rate=1e-3, steps=10, warmup=2, sft_steps=300, sft_learning_rate=1e-3
    ),
    "smollm2-135m": SMOLLM2,
    "smollm2-135m-bf16": replace(SMOLLM2, name="smollm2-135m-bf16", dtype="bfloat16"),
    # The same, rewardlab drawing tokens by inverse CDF (sampling.draw): one random number per row and step.
    "smollm2-135m-bf16-cdf": replace(
        SMOLLM2, name="smollm2-135m-bf16-cdf", dtype="bfloat16", draw="inverse_cdf"
    ),
    QWEN_SHAPE: BenchConfig(
        QWEN_SHAPE,
        QWEN_SHAPE,
        device="cuda",
        dtype="bfloat16",
        max_new_tokens=32,
        learning_rate=1e-4,
        steps=10,
        warmup=2,
        sft_steps=0,
    ),
}


@dataclass
class RunSpec:
    """What one subprocess runs: one trainer, one seed, on a prepared model directory."""

    trainer: str
    config: BenchConfig
    model_dir: str
    seed: int
    threads: int
    inline_rewards: bool
    work_dir: str


@dataclass
class RunResult:
    trainer: str
    seed: int
    step_seconds: list[float]  # the timed steps only
    rewards: list[float]  # mean reward of every step, in order
    completion_tokens: list[float]  # generated tokens of every step
    prompts_seen: list[list[str]]  # example ids of every step, to check both trainers saw the same
    peak_rss_mb: float
    threads: int


# -- what both trainers share: environment, prompts, starting model ---------------------------------------


def make_environment(inline_rewards: bool, prompt_style: str = "terse"):
    """The arithmetic environment of the demo (level 2) with its rubric: exact answer + 0.1 x format."""
    from rewardlab.envs.registry import load_environment

    env = load_environment("arithmetic", **ENV_ARGS, prompt_style=prompt_style)
    if inline_rewards and hasattr(env.rubric, "isolation"):
        # Reward calls run in the trainer's own process, for both trainers alike.
        env.rubric.isolation = "inline"
    return env


def step_examples(env, config: BenchConfig, seed: int) -> list:
    """Every step's prompts, in rewardlab's order; TRL gets them as an unshuffled dataset."""
    from rewardlab.train.trainer import examples_for_step

    pool = env.examples("train")
    return [
        example
        for step in range(1, config.steps + 1)
        for example in examples_for_step(pool, step, config.prompts_per_step, seed)
    ]


def load_policy(spec: RunSpec):
    """The model both trainers start from: the same weights and the same LoRA initialisation."""
    from rewardlab.models.loading import LoraSettings, load_model
    from rewardlab.train.common import set_seed

    set_seed(spec.seed)  # rewardlab's train() seeds the same way before the adapter is added
    config = spec.config
    lora = LoraSettings(config.lora_rank, config.lora_alpha) if config.lora_rank else None
    return load_model(spec.model_dir, config.dtype, config.device, lora=lora, trainable=True)


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_intervals(step_ends: list[float], warmup: int) -> list[float]:
    """The durations of steps ``max(warmup, 1) + 1`` onwards: each is the gap since the previous step ended.

    Step 1 has no previous end (its time includes setup), so it is never timed.
    """
    gaps = [later - earlier for earlier, later in zip(step_ends, step_ends[1:], strict=False)]
    return gaps[max(warmup - 1, 0) :]  # gaps[0] is step 2


def first_timed_step(warmup: int) -> int:
    """0-based index of the first timed step (see :func:`timed_intervals`)."""
    return max(warmup, 1)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# -- rewardlab ---------------------------------------------------------------------------------------------


def rewardlab_train_config(spec: RunSpec):
    from rewardlab.config import TrainConfig

    config = spec.config
    return TrainConfig.model_validate(
        {
            "model": {"name_or_path": spec.model_dir, "dtype": config.dtype, "device": config.device},
            "lora": {
                "enabled": config.lora_rank > 0,
                "rank": max(config.lora_rank, 1),
                "alpha": config.lora_alpha,
            },
            "sampling": {
                "temperature": config.temperature,
                "max_new_tokens": config.max_new_tokens,
                "draw": config.draw,
            },
            "runs_dir": str(Path(spec.work_dir) / "runs"),
            "seed": spec.seed,
            "max_steps": config.steps,
            "prompts_per_step": config.prompts_per_step,
            "group_size": config.group_size,
            "optimizer": {
                "learning_rate": config.learning_rate,
                "lr_scheduler": "constant",
                "adam_beta1": 0.9,
                "adam_beta2": 0.99,
                "weight_decay": 0.0,
                "max_grad_norm": 1.0,
            },
            "loss_type": config.loss_type,
            "epsilon_low": config.epsilon,
            "epsilon_high": config.epsilon,
            "beta": 0.0,
            "num_iterations": 1,
            "scale_rewards": True,
            "checkpoint_every": 0,
        }
    )


def run_rewardlab(spec: RunSpec) -> RunResult:
    from rewardlab.runs import RunStore
    from rewardlab.train.trainer import train

    config = spec.config
    step_ends: list[float] = []

    class StepClock(RunStore):
        """The run store, noting when each step's metrics arrive: the end of that step."""

        def log_metrics(self, run_id, step, metrics):
            step_ends.append(time.perf_counter())
            return super().log_metrics(run_id, step, metrics)

    store = StepClock(Path(spec.work_dir) / "runs")
    env = make_environment(spec.inline_rewards, config.prompt_style)
    result = train(rewardlab_train_config(spec), store, env=env)
    metrics = store.metrics(result.run_id)
    batch = config.prompts_per_step * config.group_size
    examples = step_examples(env, config, spec.seed)  # train() draws exactly these, step by step
    per_step = config.prompts_per_step
    return RunResult(
        trainer="rewardlab",
        seed=spec.seed,
        step_seconds=timed_intervals(step_ends, config.warmup),
        rewards=[value for _, value in metrics["reward/mean"]],
        completion_tokens=[value * batch for _, value in metrics["completion/mean_length"]],
        prompts_seen=[[e.id for e in examples[i : i + per_step]] for i in range(0, len(examples), per_step)],
        peak_rss_mb=peak_rss_mb(),
        threads=torch_threads(),
    )


# -- TRL ---------------------------------------------------------------------------------------------------


def trl_reward_function(env, examples: list, seen_rows: list[list[int]]):
    """A TRL reward function that scores with the environment's rubric, as rewardlab's trainer does.

    TRL passes the dataset's columns along: ``row`` says which example each completion answers. The rows
    of every call are noted in ``seen_rows`` (one call per step).
    """
    from rewardlab.types import Rollout

    def rubric(prompts, completions, completion_ids, row, **kwargs):
        seen_rows.append(list(row))
        rollouts = [
            Rollout(
                examples[index], 0, list(messages), completion_ids=list(ids), completion_mask=[1] * len(ids)
            )
            for index, messages, ids in zip(row, completions, completion_ids, strict=True)
        ]
        # An unscorable completion is None for TRL (left out of its group), as rewardlab leaves it out.
        return [None if s.errored else s.reward for s in env.rubric.score(rollouts)]

    return rubric


def trl_arguments(spec: RunSpec, output_dir: str):
    from trl import GRPOConfig

    config = spec.config
    return GRPOConfig(
        output_dir=output_dir,
        # one optimizer step = prompts_per_step prompts x group_size completions, all generated at once
        per_device_train_batch_size=config.prompts_per_step * config.group_size,
        gradient_accumulation_steps=1,
        num_generations=config.group_size,
        max_completion_length=config.max_new_tokens,
        temperature=config.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.99,
        weight_decay=0.0,
        max_grad_norm=1.0,
        loss_type=config.loss_type,
        epsilon=config.epsilon,
        epsilon_high=config.epsilon,
        beta=0.0,
        num_iterations=1,
        scale_rewards="group",
        max_steps=config.steps,
        shuffle_dataset=False,
        seed=spec.seed,
        use_vllm=False,
        use_cpu=config.device == "cpu",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        logging_steps=1,  # rewardlab logs every step too; the reward curve comes from these logs
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
    )


def run_trl(spec: RunSpec) -> RunResult:
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOTrainer

    config = spec.config
    env = make_environment(spec.inline_rewards, config.prompt_style)
    examples = step_examples(env, config, spec.seed)
    model, tokenizer = load_policy(spec)
    step_ends: list[float] = []
    step_logs: list[dict[str, float]] = []
    seen_rows: list[list[int]] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                step_logs.append({k: float(v) for k, v in logs.items() if isinstance(v, int | float)})

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=trl_reward_function(env, examples, seen_rows),
        args=trl_arguments(spec, str(Path(spec.work_dir) / "trl")),
        train_dataset=Dataset.from_list([{"prompt": e.prompt, "row": i} for i, e in enumerate(examples)]),
        processing_class=tokenizer,
        callbacks=[StepClock()],
    )
    trainer.remove_callback(PrinterCallback)  # rewardlab prints nothing either
    torch.set_num_threads(spec.threads)  # whatever the setup did, both trainers run on as many threads
    trainer.train()
    batch = config.prompts_per_step * config.group_size
    return RunResult(
        trainer="trl",
        seed=spec.seed,
        step_seconds=timed_intervals(step_ends, config.warmup),
        rewards=[entry["reward"] for entry in step_logs],
        completion_tokens=[entry["completions/mean_length"] * batch for entry in step_logs],
        prompts_seen=[[examples[i].id for i in rows[:: config.group_size]] for rows in seen_rows],
        peak_rss_mb=peak_rss_mb(),
        threads=torch_threads(),
    )


RUNNERS = {"rewardlab": run_rewardlab, "trl": run_trl}


# -- one run per subprocess -------------------------------------------------------------------------------


def child_main(spec_json: str) -> None:
    """A subprocess's entry point: run one trainer, print its result as one marked JSON line."""
    raw = json.loads(spec_json)
    spec = RunSpec(**{**raw, "config": BenchConfig(**raw["config"])})
    import torch

    torch.set_num_threads(spec.threads)
    result = RUNNERS[spec.trainer](spec)
    print(RESULT_MARKER + json.dumps(asdict(result)), flush=True)


def run_in_subprocess(spec: RunSpec, timeout: float) -> RunResult:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(asdict(spec))]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return RunResult(**json.loads(line[len(RESULT_MARKER) :]))
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
    raise RuntimeError(f"{spec.trainer} run failed (exit code {done.returncode}):\n{tail}")


# -- the starting model: built locally, primed once, cached ------------------------------------------------


def save_qwen_shaped_model(path: Path) -> Path:
    """A Qwen2.5-0.5B-shaped model with random weights and the tiny tokenizer, saved like any HF model."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from rewardlab.models.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **QWEN_05B_DIMENSIONS,
    )
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def prepare_model(config: BenchConfig, cache_dir: Path) -> Path:
    """The directory both trainers load: built from a seed, primed with SFT, reused by later runs."""
    from rewardlab.models.catalog import PACKAGED_MODELS

    if config.model_shape in PACKAGED_MODELS:  # a real model: its converted directory, used as it is
        from rewardlab.models.loading import resolve

        return Path(resolve(config.model_shape)[0])
    target = cache_dir / f"{config.model_shape}-sft{config.sft_steps}"
    if (target / "config.json").exists():
        return target
    from rewardlab.models.tiny import save_tiny_model

    raw = cache_dir / f"{config.model_shape}-raw"
    if not (raw / "config.json").exists():
        save_qwen_shaped_model(raw) if config.model_shape == QWEN_SHAPE else save_tiny_model(
            config.model_shape, raw
        )
    if config.sft_steps == 0:
        shutil.copytree(raw, target)
        return target
    from rewardlab.config import SFTConfig
    from rewardlab.runs import RunStore
    from rewardlab.train.sft import run_sft

    print(f"priming {config.model_shape} with {config.sft_steps} SFT steps (once; cached in {cache_dir})")
    runs = cache_dir / "sft-runs"
    primed = run_sft(
        SFTConfig.model_validate(
            {
                "model": {"name_or_path": str(raw)},
                "env": {"name": "arithmetic", "args": ENV_ARGS},
                "max_steps": config.sft_steps,
                "optimizer": {
                    "learning_rate": config.sft_learning_rate,
                    "warmup_steps": min(50, config.sft_steps // 5),
                },
                "runs_dir": str(runs),
            }
        ),
        RunStore(runs),
    )
    shutil.copytree(primed.model_dir, target)
    return target


# -- the FLOP floor -----------------------------------------------------------------------------------------


@dataclass
class ModelShape:
    """What the FLOP count needs to know about the model."""

    matmul_params: int  # weights of the base model's linear layers (the LM head included)
    lora_params: int  # adapter weights (0 for full fine-tuning)
    trainable_matmul_params: int  # base linear weights that get gradients (all of them without LoRA)
    layers: int
    attention_width: int  # heads x head dim: the width of the QK^T and AV products


def model_shape(model_dir: Path, config: BenchConfig) -> ModelShape:
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(model_dir)
    hidden, inter, layers = hf.hidden_size, hf.intermediate_size, hf.num_hidden_layers
    head_dim = getattr(hf, "head_dim", None) or hidden // hf.num_attention_heads
    kv = hf.num_key_value_heads * head_dim
    q_and_o = 2 * hidden * hf.num_attention_heads * head_dim
    per_layer = {"q_o": q_and_o, "k_v": 2 * hidden * kv, "mlp": 3 * hidden * inter}
    matmul = layers * sum(per_layer.values()) + hidden * hf.vocab_size
    # all-linear LoRA adapts every projection of every layer: r x (in + out) weights each
    rank = config.lora_rank
    lora = 0
    if rank:
        projections = [(hidden, hf.num_attention_heads * head_dim)] * 2 + [(hidden, kv)] * 2
        projections += [(hidden, inter)] * 3
        lora = layers * sum(rank * (a + b) for a, b in projections)
    return ModelShape(matmul, lora, 0 if rank else matmul, layers, hf.num_attention_heads * head_dim)


def attention_flops(shape: ModelShape, context_lengths: list[float]) -> float:
    """QK^T and AV for one token per entry of ``context_lengths``: 4 x context x width per layer."""
    return 4.0 * shape.attention_width * shape.layers * sum(context_lengths)


def step_flops(
    shape: ModelShape, prompt_lengths: list[int], completions_per_prompt: int, completion_tokens: float
) -> float:
    """The least arithmetic one GRPO step needs (multiply-adds count as 2 FLOPs).

    Tokens: every distinct prompt once (its completions all continue the same prefix), plus every
    generated token. Generation: 2 x matmul params per token plus attention over the prefix. Training:
    forward (2 x params) + gradient with respect to activations (2 x params) + gradient with respect to
    the weights that train (2 x trainable params; with LoRA only the adapters, 6 x adapter params for
    their own forward and backward), attention three times (forward and two backward products). No
    reference or old-policy forward: with beta 0 and one pass over each batch neither trainer needs one.
    """
    prompts = len(prompt_lengths)
    mean_completion = completion_tokens / max(prompts * completions_per_prompt, 1)
    prompt_tokens = sum(prompt_lengths)
    tokens = prompt_tokens + completion_tokens
    contexts = [t for length in prompt_lengths for t in range(1, length + 1)]
    contexts += [
        completions_per_prompt * (length + mean_completion / 2) * mean_completion for length in prompt_lengths
    ]
    attention = attention_flops(shape, contexts)
    generation = 2.0 * shape.matmul_params * tokens + attention
    per_token_training = (
        4.0 * shape.matmul_params + 2.0 * shape.trainable_matmul_params + 6.0 * shape.lora_params
    )
    training = per_token_training * tokens + 3.0 * attention
    return generation + training


def matmul_flops_per_second(hidden: int, inter: int, threads: int, device: str, dtype: str) -> float:
    """The best throughput of a few matmuls the size of the model's own, in the dtype the model runs in."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype)
    sizes = [(m, k, n) for m in (64, 512) for k, n in ((hidden, inter), (inter, hidden), (hidden, hidden))]
    best = 0.0
    for m, k, n in sizes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        repeats = max(3, int(2e9 / (2 * m * k * n)))  # about 2 GFLOP a round
        for _ in range(3):
            a @ b
        for _ in range(5):
            if device != "cpu":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(repeats):
                a @ b
            if device != "cpu":
                torch.cuda.synchronize()
            best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - started))
    return best


# -- the comparison ----------------------------------------------------------------------------------------


def prompt_lengths_per_step(model_dir: Path, config: BenchConfig, seed: int) -> list[list[int]]:
    from rewardlab.models.chat import ChatRenderer
    from rewardlab.models.loading import load_tokenizer

    renderer = ChatRenderer(load_tokenizer(str(model_dir)))
    examples = step_examples(make_environment(True, config.prompt_style), config, seed)
    per_step = config.prompts_per_step
    return [
        [len(renderer.prompt_ids(e.prompt)) for e in examples[i : i + per_step]]
        for i in range(0, len(examples), per_step)
    ]


def summarize(
    config: BenchConfig,
    runs: list[RunResult],
    shape: ModelShape,
    prompt_lengths: dict[int, list[list[int]]],
    flops_per_second: float,
) -> dict[str, Any]:
    """Median step time, tokens/s, peak RSS, FLOP-floor multiple and rewards of one trainer's runs."""
    first = first_timed_step(config.warmup)
    steps = [s for run in runs for s in run.step_seconds]
    timed_tokens = [t for run in runs for t in run.completion_tokens[first:]]
    floors = [
        step_flops(shape, prompt_lengths[run.seed][i], config.group_size, run.completion_tokens[i])
        / flops_per_second
        for run in runs
        for i in range(first, len(run.completion_tokens))
    ]
    per_seed = [statistics.fmean(run.rewards) for run in runs]
    median_step = statistics.median(steps)
    return {
        "median_step_s": median_step,
        "repeat_median_step_s": [statistics.median(run.step_seconds) for run in runs],
        "tokens_per_s": sum(timed_tokens) / sum(steps),
        "peak_rss_mb": statistics.median(run.peak_rss_mb for run in runs),
        "floor_s": statistics.median(floors),
        "floor_multiple": median_step / statistics.median(floors),
        "mean_reward": statistics.fmean(per_seed),
        "mean_reward_sd_over_seeds": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
        "first_step_reward": statistics.fmean(run.rewards[0] for run in runs),
        "last_quarter_reward": statistics.fmean(
            r for run in runs for r in run.rewards[-max(1, len(run.rewards) // 4) :]
        ),
        "reward_curve": [
            statistics.fmean(values) for values in zip(*(run.rewards for run in runs), strict=True)
        ],
        "threads": runs[0].threads,
    }


def compare(
    config: BenchConfig, repeats: int, threads: int, inline_rewards: bool, cache_dir: Path, timeout: float
) -> dict[str, Any]:
    """Run both trainers ``repeats`` times each, alternating, and summarize."""
    model_dir = prepare_model(config, cache_dir)
    shape = model_shape(model_dir, config)
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(model_dir)
    flops = matmul_flops_per_second(
        hf.hidden_size, hf.intermediate_size, threads, config.device, config.dtype
    )
    seeds = list(range(repeats))
    runs: dict[str, list[RunResult]] = {name: [] for name in TRAINERS}
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as work:
        for seed in seeds:
            for trainer in TRAINERS:
                spec = RunSpec(
                    trainer, config, str(model_dir), seed, threads, inline_rewards, f"{work}/{trainer}{seed}"
                )
                result = run_in_subprocess(spec, timeout)
                runs[trainer].append(result)
                print(
                    f"  {config.name} seed {seed} {trainer:9s} median step "
                    f"{statistics.median(result.step_seconds):.4f} s, peak RSS {result.peak_rss_mb:.0f} MiB",
                    flush=True,
                )
    for ours, theirs in zip(runs["rewardlab"], runs["trl"], strict=True):
        if ours.prompts_seen != theirs.prompts_seen:
            raise RuntimeError(f"seed {ours.seed}: the trainers did not see the same prompts")
    lengths = {seed: prompt_lengths_per_step(model_dir, config, seed) for seed in seeds}
    summary = {name: summarize(config, runs[name], shape, lengths, flops) for name in TRAINERS}
    return {
        "config": asdict(config),
        "matmul_gflops": flops / 1e9,
        "parameters": asdict(shape),
        "same_prompts": True,
        "ratio_trl_over_rewardlab": summary["trl"]["median_step_s"] / summary["rewardlab"]["median_step_s"],
        **summary,
        "runs": {name: [asdict(run) for run in runs[name]] for name in TRAINERS},
    }


# -- reporting ---------------------------------------------------------------------------------------------


def environment_description() -> dict[str, str]:
    import peft
    import torch
    import transformers

    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = "not installed"
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram_gib": f"{memory_kb / 1024**2:.1f}",
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl_version,
        "rewardlab_commit": commit or "unknown",
    }


TABLE_COLUMNS = (
    "config",
    "rewardlab median step (s)",
    "TRL median step (s)",
    "TRL / rewardlab",
    "tokens/s rewardlab",
    "tokens/s TRL",
    "peak RSS rewardlab (MiB)",
    "peak RSS TRL (MiB)",
    "FLOP-floor multiple rewardlab",
    "FLOP-floor multiple TRL",
    "mean reward rewardlab (± sd over seeds)",
    "mean reward TRL (± sd over seeds)",
)


def table_cells(row: dict[str, Any]) -> list[str]:
    name = row["config"]["name"]
    if "not_run" in row:
        return [name, row["not_run"]] + [""] * (len(TABLE_COLUMNS) - 2)
    ours, theirs = row["rewardlab"], row["trl"]
    both = (ours, theirs)
    return [
        name,
        *(f"{side['median_step_s']:.3f}" for side in both),
        f"**{row['ratio_trl_over_rewardlab']:.2f}x**",
        *(f"{side['tokens_per_s']:.0f}" for side in both),
        *(f"{side['peak_rss_mb']:.0f}" for side in both),
        *(f"{side['floor_multiple']:.1f}x" for side in both),
        *(f"{side['mean_reward']:.3f} ± {side['mean_reward_sd_over_seeds']:.3f}" for side in both),
    ]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS), help="rows to run (repeatable)")
    parser.add_argument("--device", default=None, help="override the configs' device (cpu, cuda)")
    parser.add_argument(
        "--model-shape", default=None, choices=sorted({c.model_shape for c in CONFIGS.values()})
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per trainer, alternating; one seed each")
    parser.add_argument("--steps", type=int, default=None, help="override the configs' step count")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument(
        "--isolated-rewards",
        action="store_true",
        help="score with the rubric's default isolation (worker processes) instead of in-process calls",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "rewardlab-bench-cache"
    )
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected_configs(args: argparse.Namespace) -> list[BenchConfig]:
    names = args.config or (["tiny", "tiny-25m", QWEN_SHAPE] if args.model_shape is None else [])
    if args.model_shape is not None:
        names.append(args.model_shape)
    configs = []
    for name in dict.fromkeys(names):
        config = CONFIGS[name]
        overrides = {}
        if args.device:
            overrides["device"] = args.device
        if args.steps:
            overrides["steps"] = args.steps
        configs.append(BenchConfig(**{**asdict(config), **overrides}))
    return configs


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.child:
        child_main(args.child)
        return
    import torch

    description = environment_description()
    print(json.dumps(description, indent=2), flush=True)
    rows = []
    for config in selected_configs(args):
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            rows.append({"config": asdict(config), "not_run": "not run: no GPU available"})
            continue
        print(f"{config.name}: {args.repeats} x (rewardlab, TRL), {config.steps} steps each", flush=True)
        rows.append(
            compare(
                config, args.repeats, args.threads, not args.isolated_rewards, args.cache_dir, args.timeout
            )
        )
    description["load_average_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    table = markdown_table(rows)
    print(table)
    if args.out:
        args.out.write_text(json.dumps({"environment": description, "rows": rows, "table": table}, indent=2))


if __name__ == "__main__":
    main()
