"""One config per command that runs something.

Training-like commands come in two parts: the *settings* of the stage (``SFTSettings``, ``TrainSettings``,
``EvalSettings``: how it trains or measures) and the *config* of the command (``SFTConfig`` and so on: the
settings plus which model, which environment and where the run is recorded). The demo runs the three stages
on one model and environment, so ``DemoConfig`` holds their settings as its ``sft``, ``train`` and ``eval``
tables.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from rewardlab.config.base import RenamedField, Section, preset
from rewardlab.config.sections import (
    OPTIMIZER_FIELDS,
    REPORT_TO,
    BudgetConfig,
    CurriculumConfig,
    DynamicSamplingConfig,
    EntropyControlConfig,
    EnvConfig,
    EvalModelConfig,
    HealthConfig,
    LoraConfig,
    ModelConfig,
    OptimizerConfig,
    ReportTo,
    SamplingConfig,
    check_precision,
)

# -- sft -----------------------------------------------------------------------------------------------


class SFTSettings(Section):
    """How supervised priming trains: data, length, optimizer, adapter."""

    renamed: ClassVar[dict[str, str | tuple[str, ...]]] = {
        name: f"optimizer.{name}"
        for name in ("learning_rate", "lr_scheduler", "warmup_steps", "weight_decay", "max_grad_norm")
    }

    data: str | None = Field(
        None, description="JSONL of {prompt, completion} rows; default: the environment's demonstrations."
    )
    max_steps: int = Field(1000, gt=0, description="Optimizer steps, one batch of batch_size sequences each.")
    batch_size: int = Field(64, gt=0, description="Sequences per step.")
    optimizer: OptimizerConfig = Field(
        default_factory=preset(
            OptimizerConfig, learning_rate=1e-3, lr_scheduler="cosine", warmup_steps=50, adam_beta2=0.999
        ),
        description="AdamW and its schedule.",
    )
    lora: LoraConfig = Field(
        default_factory=preset(LoraConfig, enabled=False),
        description="Adapter settings (off: full fine-tune).",
    )
    log_every: int = Field(25, gt=0, description="Log loss every N steps.")
    report_to: ReportTo = Field(default_factory=list, description=REPORT_TO)
    budget: BudgetConfig = Field(
        default_factory=BudgetConfig, description="What the run costs, and limits that stop it."
    )


class SFTConfig(SFTSettings):
    """Supervised priming on demonstrations, so reinforcement learning starts from non-zero rewards."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The model to prime.")
    env: EnvConfig = Field(
        default_factory=EnvConfig, description="Prompts and demonstrations come from here."
    )
    run_name: str | None = Field(None, description="A label for the run.")
    runs_dir: str = Field("runs", description="Where the run store lives.")
    seed: int = Field(0, description="Seeds data order and initialisation.")

    @model_validator(mode="after")
    def _precision(self) -> SFTConfig:
        check_precision(self.lora, self.model.dtype)
        return self


# -- train ---------------------------------------------------------------------------------------------

# Each loss type's paper settings, used for the fields a config leaves out (a saved config then holds
# them explicitly, so it says what the run did). DeepSeekMath's GRPO clips at 0.2 both ways and divides by
# the group std; DAPO raises the upper clip to 0.28; Dr. GRPO removes the std division (it weighs easy and
# hard prompts unevenly); GSPO clips its sequence-level ratio at 3e-4 / 4e-4, as a sequence ratio (a mean
# of token log-ratios) moves far less than a token's.
LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    "grpo": {"scale_rewards": True, "epsilon_low": 0.2, "epsilon_high": 0.2},
    "dapo": {"scale_rewards": True, "epsilon_low": 0.2, "epsilon_high": 0.28},
    "dr_grpo": {"scale_rewards": False, "epsilon_low": 0.2, "epsilon_high": 0.2},
    "gspo": {"scale_rewards": True, "epsilon_low": 3e-4, "epsilon_high": 4e-4},
}


class TrainSettings(Section):
    """How GRPO trains: the batch of rollouts, the loss, the optimizer, the adapter, sampling."""

    renamed: ClassVar[dict[str, str | tuple[str, ...]]] = {
        **{name: f"optimizer.{name}" for name in OPTIMIZER_FIELDS},
        "gradient_accumulation_steps": "micro_batches",
    }
    # A parent's preset clip range and std scaling belong to its loss type: naming another one starts
    # from that loss type's paper settings.
    default_follows: ClassVar[dict[str, str]] = dict.fromkeys(
        ("scale_rewards", "epsilon_low", "epsilon_high"), "loss_type"
    )

    max_steps: int = Field(
        100,
        gt=0,
        description="GRPO steps. Each samples one batch of rollouts (prompts_per_step x group_size) and "
        "takes num_iterations optimizer steps on it.",
    )
    prompts_per_step: int = Field(16, gt=0, description="Groups (distinct prompts) per step.")
    group_size: int = Field(8, ge=2, description="Completions per prompt; advantages compare within a group.")
    num_iterations: int = Field(
        1, gt=0, description="Optimizer steps on each batch of rollouts; >1 uses stored old log-probs."
    )
    micro_batches: int = Field(
        1,
        gt=0,
        description="Pieces a batch of rollouts is split into for the forward and backward passes: less "
        "memory, the same update (formerly gradient_accumulation_steps).",
    )
    loss_type: Literal["grpo", "dapo", "dr_grpo", "gspo"] = Field(
        "dapo",
        description="Aggregation: grpo = per-sequence mean; dapo = token-level mean; dr_grpo = constant "
        "length normaliser; gspo = sequence-level importance ratio.",
    )
    scale_rewards: bool = Field(
        True,
        description="Divide advantages by the group's reward std (default by loss_type: false for dr_grpo, "
        "true for the others).",
    )
    epsilon_low: float = Field(
        0.2,
        ge=0,
        description="Lower clip: ratio >= 1 - epsilon_low (default by loss_type: 0.2; 3e-4 for gspo).",
    )
    epsilon_high: float = Field(
        0.28,
        ge=0,
        description="Upper clip: ratio <= 1 + epsilon_high (default by loss_type: 0.28 for dapo's "
        "clip-higher, 0.2 for grpo and dr_grpo, 4e-4 for gspo).",
    )
    beta: float = Field(
        0.0, ge=0, description="KL penalty to the reference policy (see reference); needs LoRA."
    )
    reference: Literal["initial", "base"] = Field(
        "initial",
        description="The KL reference: 'initial' is the policy training started from, frozen (a starting "
        "adapter included), so the KL is 0 at step 1; 'base' is the base model with every adapter off.",
    )
    disable_dropout: bool = Field(
        True,
        description="Turn dropout off while training (the LoRA branch's too): the sampling pass runs without "
        "it, so with it the first pass's ratio pi/pi_old would not be 1.",
    )
    dynamic_sampling: DynamicSamplingConfig = Field(
        default_factory=DynamicSamplingConfig, description="DAPO's dynamic sampling (off by default)."
    )
    entropy: EntropyControlConfig = Field(
        default_factory=EntropyControlConfig,
        description="Entropy control: adaptive bonus, Clip-Cov, KL-Cov, advantage clipping (all off).",
    )
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="AdamW and its schedule.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Adapter settings.")
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Rollout sampling; the loss uses the same temperature."
    )
    checkpoint_every: int = Field(
        50, ge=0, description="Save a resumable checkpoint every N steps (0: only at the end)."
    )
    log_rollouts_per_step: int = Field(
        8, ge=0, description="Rollouts stored per step with their reward breakdown."
    )
    report_to: ReportTo = Field(default_factory=list, description=REPORT_TO)
    max_batch_size: int = Field(256, gt=0, description="Most sequences per forward pass when sampling.")
    seed_per_group: bool = Field(
        False,
        description="Sample each group from its own random stream, seeded by (seed, step, group), so what a "
        "group draws does not depend on the rest of the batch: on by itself in data-parallel training "
        "(several processes draw what one would); off, a step draws from one stream, as before.",
    )
    curriculum: CurriculumConfig = Field(
        default_factory=CurriculumConfig, description="Which difficulty levels each step's prompts come from."
    )
    health: HealthConfig = Field(default_factory=HealthConfig, description="Alerts while the run goes.")
    budget: BudgetConfig = Field(
        default_factory=BudgetConfig, description="What the run costs, and limits that stop it."
    )

    @model_validator(mode="before")
    @classmethod
    def _paper_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        loss_type = data.get("loss_type", cls.model_fields["loss_type"].default)
        return {**LOSS_DEFAULTS.get(loss_type, {}), **data}

    @model_validator(mode="after")
    def _combinations(self) -> TrainSettings:
        """Settings that validate one by one but cannot work together, refused before any model loads."""
        if self.beta > 0 and not self.lora.enabled:
            raise ValueError(
                "beta > 0 needs a reference model: enable LoRA (lora.enabled = true; the base with its "
                "adapters off is the reference)"
            )
        # below 1e-5 the sampler is greedy too (as vLLM is): a tinier temperature overflows float32
        if self.sampling.temperature < 1e-5:
            raise ValueError(
                f"sampling.temperature = {self.sampling.temperature:g} is greedy (below 1e-5 it is), and "
                "greedy gives every completion of a group the same text, so GRPO has nothing to compare: use "
                "a temperature of at least 1e-5 (1.0 samples the model as it is)"
            )
        if self.dynamic_sampling.enabled and self.curriculum.mode != "off":
            raise ValueError(
                "dynamic_sampling and a curriculum cannot be combined yet: dynamic sampling's extra draws "
                "come from the whole pool, not from the curriculum's levels; turn one of them off"
            )
        if self.loss_type == "gspo" and (self.entropy.clip_cov_fraction or self.entropy.kl_cov_fraction):
            raise ValueError(
                "entropy.clip_cov_fraction and entropy.kl_cov_fraction act on single tokens' ratios and "
                "gradients, and gspo's ratio is per sequence: use them with grpo, dapo or dr_grpo"
            )
        rollouts = self.prompts_per_step * self.group_size
        if self.micro_batches > rollouts:
            raise ValueError(
                f"micro_batches = {self.micro_batches} is more than the {rollouts} rollouts of a step "
                "(prompts_per_step x group_size)"
            )
        return self


class TrainConfig(TrainSettings):
    """GRPO-family reinforcement learning with LoRA (or full fine-tuning)."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The policy's starting point.")
    env: EnvConfig = Field(default_factory=EnvConfig, description="The task.")
    run_name: str | None = Field(None, description="A label for the run in `rewardlab runs list`.")
    runs_dir: str = Field("runs", description="Where the run store (SQLite + run directories) lives.")
    seed: int = Field(0, description="Seeds example order, sampling and initialisation.")
    resume: str | None = Field(None, description="Run id or directory to continue from its last checkpoint.")
    rollout_engine: Literal["local", "server"] = Field(
        "local",
        description="Where rollouts are sampled: 'local' (the model being trained, in process) or 'server' "
        "(an OpenAI-compatible server that loads LoRA adapters at run time: rewardlab serve "
        "--allow-runtime-adapters, or vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), which gets the "
        "adapter after every update; see docs/training.md.",
    )
    rollout_base_url: str | None = Field(
        None, description="The rollout server's API root, e.g. http://127.0.0.1:8000/v1 (server engine)."
    )
    rollout_api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the rollout server's key (none: no key)."
    )
    rollout_adapter_dir: str | None = Field(
        None,
        description="Where adapters are written for the rollout server to load: for rewardlab serve inside "
        "its --adapter-dir; on another machine, storage both share.",
    )
    rollout_adapter_server_dir: str | None = Field(
        None, description="rollout_adapter_dir as the server sees it, when mounted elsewhere there."
    )
    rollout_max_concurrency: int = Field(32, gt=0, description="Requests in flight to the rollout server.")
    rollout_timeout_s: float = Field(300.0, gt=0, description="Seconds one rollout request may take.")
    max_off_policy_steps: int = Field(
        0,
        ge=0,
        description="Steps sampling may run ahead of training (rollout_engine = 'server'): 0 samples every "
        "step with the adapter just trained; k >= 1 samples steps t+1..t+k while step t trains, each by an "
        "adapter at most k updates old, the importance ratio taken against the log-probs it sampled with.",
    )

    @model_validator(mode="after")
    def _precision(self) -> TrainConfig:
        check_precision(self.lora, self.model.dtype)
        return self

    @model_validator(mode="after")
    def _rollouts(self) -> TrainConfig:
        for problem in rollout_engine_problems(self):
            raise ValueError(problem)
        return self


def rollout_engine_problems(config: TrainConfig) -> list[str]:
    """Rollout settings that cannot work together, refused before anything loads."""
    if config.rollout_engine == "local":
        if config.max_off_policy_steps:
            return [
                "max_off_policy_steps >= 1 needs rollout_engine = 'server': in process, sampling and "
                "training share one copy of the weights, so sampling cannot run ahead"
            ]
        return []
    missing = [name for name in ("rollout_base_url", "rollout_adapter_dir") if not getattr(config, name)]
    if missing:
        return [f"rollout_engine = 'server' needs {' and '.join(missing)} (see docs/training.md)"]
    if not config.lora.enabled:
        return ["rollout_engine = 'server' sends the server LoRA adapters: enable LoRA (lora.enabled = true)"]
    if config.max_off_policy_steps and config.curriculum.mode != "off":
        return [
            "max_off_policy_steps >= 1 and a curriculum cannot be combined yet: a curriculum picks a step's "
            "levels from the steps before it, which sampling ahead has not seen; set max_off_policy_steps = 0"
        ]
    return []


# -- eval and compare ----------------------------------------------------------------------------------


class EvalSettings(Section):
    """How an evaluation measures: how many examples and rollouts, sampled how."""

    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Rollout sampling.")
    num_examples: int | None = Field(
        None, gt=0, description="Examples to evaluate (default: the whole split)."
    )
    rollouts_per_example: int = Field(4, gt=0, description="Rollouts per example (r); pass@k for k <= r.")
    pass_threshold: float = Field(1.0, description="A rollout passes when its primary component >= this.")
    max_batch_size: int = Field(256, gt=0, description="Most sequences per forward pass.")


class EvalConfig(EvalSettings):
    """n examples x r rollouts of a model on an environment's split."""

    model: EvalModelConfig = Field(default_factory=EvalModelConfig, description="The model to evaluate.")
    env: EnvConfig = Field(default_factory=EnvConfig, description="The task.")
    split: Literal["train", "eval", "fresh", "adversarial"] = Field(
        "eval",
        description="Examples: 'eval' (held-out), 'train', 'fresh' (newly generated with the seed) or "
        "'adversarial' (decoys and hard cases), the last two for environments that define them.",
    )
    run_name: str | None = Field(None, description="A label for the run.")
    runs_dir: str = Field("runs", description="Where the run store lives.")
    seed: int = Field(0, description="Seeds example choice and sampling.")


class CompareConfig(Section):
    """A paired comparison: two eval runs, or two models evaluated on the same records."""

    a: str | None = Field(
        None,
        description="Baseline: an eval run, or a model (name, path, run id, scripted:...); with base_url_a "
        "the served model's name, with endpoints an alias.",
    )
    b: str | None = Field(None, description="Candidate: like a.")
    env: EnvConfig | None = Field(
        None, description="The task (default: the environment the models were trained on)."
    )
    data: str = Field(
        "held-out", description="Data modes, comma-separated: held-out, fresh, adversarial, or all."
    )
    num_examples: int | None = Field(
        None, gt=0, description="Records per mode (default: the held-out split; 200 generated ones)."
    )
    rollouts_per_example: int = Field(4, gt=0, description="Rollouts per record.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Both models' sampling.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype of both sides' local models (endpoints choose their own)."
    )
    seed: int = Field(0, description="Seed for fresh data and sampling.")
    label_a: str = Field("A", description="Name for A in the output.")
    label_b: str = Field("B", description="Name for B in the output.")
    samples: int = Field(6, ge=0, description="Debug samples to show.")
    endpoints: str | None = Field(
        None, description="TOML file of [endpoints.<alias>] tables; A and B may name its aliases."
    )
    base_url_a: str | None = Field(None, description="A is the model of that name served at this URL.")
    base_url_b: str | None = Field(None, description="B is the model of that name served at this URL.")
    force: bool = Field(
        False,
        description="Pair two eval runs even when their environment, split, temperature, response format or "
        "rollouts per example differ (refused otherwise).",
    )
    verdict_min_relative_gain: float = Field(
        0.10,
        ge=0,
        description="The verdict's bar: B passes when its relative gain over A on the primary component is "
        "at least this (0.10: 10%) and the 95% CI's lower bound is above 0, on held-out and on fresh data.",
    )
    runs_dir: str = Field("runs", description="Where the run store lives.")


# -- serve, audit, export ------------------------------------------------------------------------------


class ServeConfig(Section):
    """An OpenAI-compatible server over a base model and its LoRA adapters."""

    model: str | None = Field(
        None,
        description="Base model: a tiny model, HF directory or Hub id, an adapter directory or a run "
        "(required).",
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters served beside the base, {name = path}: an adapter directory or a train "
        "run trained on this base (--adapter name=path adds one).",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    scheduler: Literal["continuous", "static"] = Field(
        "continuous",
        description="'continuous': requests join and leave the running batch at every decoding step, base "
        "and adapter rows together (Llama and Qwen2 models, plain LoRA); 'static': batch by batch (any "
        "model; also what other models get).",
    )
    max_batch_size: int = Field(
        128,
        gt=0,
        description="Most completions generated together (continuous: rows running at once; their keys and "
        "values are allocated as traffic needs them).",
    )
    prefill_chunk_tokens: int = Field(
        256,
        gt=0,
        description="Continuous: most prompt tokens prefilled between two decoding steps (a longer prompt is "
        "prefilled in chunks), bounding how long a new prompt stalls the running rows.",
    )
    batch_wait_ms: float = Field(
        5.0, ge=0, description="Static: how long an idle server waits for more requests to batch."
    )
    mix_adapters: bool = Field(
        False,
        description="Static: batch base and adapter requests together (peft per-row adapters; continuous "
        "batching always does, with batched LoRA).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    device: str = Field("auto", description="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', ...")
    runs_dir: str = Field("runs", description="Where the run store lives (for run ids).")
    allow_runtime_adapters: bool = Field(
        False,
        description="Let clients load and unload adapters while serving (/v1/load_lora_adapter), from the "
        "adapter_dirs only.",
    )
    adapter_dirs: list[str] = Field(
        default_factory=list,
        description="Directories runtime adapter loads may read from (--adapter-dir, repeatable); a path "
        "outside them, through .. or a symlink, is refused.",
    )
    max_request_bytes: int = Field(1024 * 1024, gt=0, description="Largest request body (413 beyond).")
    max_n: int = Field(32, gt=0, le=128, description="Most completions per prompt a request may ask for (n).")
    max_tokens: int = Field(4096, gt=0, description="Most tokens one completion may ask for (and get).")
    max_concurrent_requests: int = Field(
        256, gt=0, description="Requests handled at once, streams until they end (429 beyond)."
    )
    max_queued_completions: int = Field(
        1024,
        gt=0,
        description="Completions waiting to be generated (429 beyond; one request asking more: 400).",
    )

    @model_validator(mode="after")
    def _runtime_adapters(self) -> ServeConfig:
        if self.allow_runtime_adapters and not self.adapter_dirs:
            raise ValueError(
                "allow_runtime_adapters needs the directories adapters may be loaded from: --adapter-dir DIR"
            )
        if self.adapter_dirs and not self.allow_runtime_adapters:
            raise ValueError(
                "adapter_dirs only matter with runtime adapters: add --allow-runtime-adapters (adapters to "
                "serve from the start take --adapter name=path)"
            )
        return self


class AuditConfig(Section):
    """The reward-hacking audit of a train run."""

    strict: bool = Field(False, description="Exit with code 1 when anything is flagged (for CI).")
    runs_dir: str = Field("runs", description="Where the run store lives.")


class ExportConfig(Section):
    """A run's adapter in PEFT format (for vLLM), and optionally the merged model."""

    out: str | None = Field(None, description="Directory to write, empty or absent (required).")
    merge: bool = Field(False, description="Also write the base model with the adapter merged in.")
    name: str = Field("tuned", description="Model name to serve the adapter under.")
    runs_dir: str = Field("runs", description="Where the run store lives.")


class DashboardConfig(Section):
    """The run store in a browser: runs, curves, rollouts, evals, comparisons and audits."""

    runs_dir: str = Field("runs", description="The run store to show (it must exist).")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0: any free port).")


# -- demo ----------------------------------------------------------------------------------------------


class DemoEvalSettings(EvalSettings):
    """How the demo measures each model, and what else it looks at."""

    greedy: bool = Field(
        True, description="Also evaluate base and tuned greedily (temperature 0, one rollout per example)."
    )
    fresh: bool = Field(
        True,
        description="Also compare base and tuned on as many freshly generated examples (environments that "
        "generate them).",
    )
    breakdown: list[str] = Field(
        default_factory=list,
        description="info keys to break the primary reward component down by (examples without the key "
        "are left out; a key no example has, skipped).",
    )


# The careless teacher forgets to carry or borrow on 70% of the problems that need it: demonstrations that
# are right only part of the time, against an exact checker (docs/ARCHITECTURE.md, "The demo's design").
DEMO_ENV_ARGS = {"level": 2, "num_train": 5000, "num_eval": 200, "teacher": "careless", "slip_rate": 0.7}
DEMO_SAMPLING = {"temperature": 1.0, "max_new_tokens": 12}


class DemoConfig(Section):
    """The demo: prime with SFT, evaluate, train with GRPO, evaluate again, a control, compare, report.

    The defaults are what ``make demo`` runs (the tiny model on arithmetic); ``sft``, ``train`` and
    ``eval`` take the fields of ``rewardlab sft``/``train``/``eval`` but the model, environment, seed and run
    store, which are the demo's (and the split: the demo evaluates on the held-out one).
    """

    renamed: ClassVar[dict[str, str | tuple[str, ...]]] = {
        "env_args": "env.args",
        "sft_steps": "sft.max_steps",
        "sft_batch_size": "sft.batch_size",
        "sft_learning_rate": "sft.optimizer.learning_rate",
        "rl_steps": "train.max_steps",
        "rl_prompts_per_step": "train.prompts_per_step",
        "rl_group_size": "train.group_size",
        "rl_learning_rate": "train.optimizer.learning_rate",
        "rl_loss_type": "train.loss_type",
        "rl_num_iterations": "train.num_iterations",
        "lora_rank": "train.lora.rank",
        "lora_alpha": "train.lora.alpha",
        "temperature": ("train.sampling.temperature", "eval.sampling.temperature"),
        "max_new_tokens": ("train.sampling.max_new_tokens", "eval.sampling.max_new_tokens"),
        "eval_rollouts": "eval.rollouts_per_example",
    }

    seed: int = Field(0, description="One seed for data order, initialisation and sampling.")
    seeds: int = Field(
        1,
        gt=0,
        description="Training seeds: the whole chain runs once per seed (seed, seed + 1, ...) and the "
        "summary gives the spread of the results between them.",
    )
    runs_dir: str = Field("runs", description="Run store for the demo and the runs it makes.")
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="The model every stage starts from or evaluates."
    )
    env: EnvConfig = Field(
        default_factory=preset(EnvConfig, name="arithmetic", args=DEMO_ENV_ARGS),
        description="The task (default: two-digit arithmetic, demonstrations by a careless teacher).",
    )
    # 1e-3, not higher: at 3e-3 whether the tiny model learns to add at all depends on floating-point
    # details (thread count, kernel order), so the primed model landed anywhere from format-only to teacher.
    sft: SFTSettings = Field(default_factory=preset(SFTSettings, max_steps=3000), description="Priming.")
    train: TrainSettings = Field(
        default_factory=preset(
            TrainSettings,
            max_steps=150,
            prompts_per_step=16,
            group_size=8,
            num_iterations=2,
            loss_type="dapo",
            optimizer={"learning_rate": 2e-3},
            lora={"rank": 16, "alpha": 32.0},
            sampling=DEMO_SAMPLING,
            checkpoint_every=0,
        ),
        description="GRPO.",
    )
    eval: DemoEvalSettings = Field(
        default_factory=preset(
            DemoEvalSettings, rollouts_per_example=4, sampling=DEMO_SAMPLING, breakdown=["needs_carry"]
        ),
        description="Evaluation of every model on the held-out split.",
    )
    control: bool = Field(
        True, description="Also run the control (as many more SFT sequences as GRPO sampled) and evaluate it."
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_was_a_name(cls, value: Any) -> Any:
        if isinstance(value, str):  # before the model became a table, ``model = "tiny"``
            warnings.warn(
                "config field 'model' is now a table: model.name_or_path; the old form works until the next "
                "release",
                RenamedField,
                stacklevel=2,
            )
            return {"name_or_path": value}
        return value

    @model_validator(mode="after")
    def _precision(self) -> DemoConfig:
        check_precision(self.sft.lora, self.model.dtype, "sft.")
        check_precision(self.train.lora, self.model.dtype, "train.")
        return self


# -- data generate -------------------------------------------------------------------------------------


class DataGenerateConfig(Section):
    """Procedural dataset generation: a generator function, a schema every row must pass, levels, balance."""

    generator: str | None = Field(
        None,
        description="The row generator, path.py:function or module:function, called as fn(rng: "
        "random.Random, level: int | None) -> dict (required).",
    )
    # Not ``schema``: that name is pydantic's own.
    row_schema: str | None = Field(
        None,
        description="What every row must satisfy: a JSON Schema file (.json) or a pydantic model "
        "(path.py:Model or module:Model) (required; --schema).",
    )
    rows: int = Field(100, gt=0, description="Rows to write.")
    out: str | None = Field(None, description="The JSONL file to write, or to resume (required).")
    levels: dict[int, float] | None = Field(
        None,
        description="Difficulty levels and their shares of the rows, 1=0.5,2=0.3,3=0.2 (shares sum to 1); "
        "none: the generator is called with level None.",
    )
    balance: str | None = Field(
        None,
        description="A field (dotted for nesting: info.kind) whose values, listed by the schema (enum, "
        "Literal, bool), each get an equal share of every level.",
    )
    seed: int = Field(0, description="Row i's draws come from a generator seeded by (seed, i, attempt).")
    max_attempts: int = Field(
        200, gt=0, description="Draws per row before giving up on it (rejected rows, balanced classes full)."
    )
    template: str | None = Field(
        None,
        description="Instead of a generator: a prompt template file sent to a model behind base_url, whose "
        "reply, constrained to the schema, is the row. {level} is the row's level; {field} (dotted) a "
        "schema field with listed values, drawn for the row and pinned in the reply.",
    )
    base_url: str | None = Field(
        None,
        description="The OpenAI-compatible endpoint a template is sent to, e.g. http://127.0.0.1:8000/v1.",
    )
    model: str | None = Field(None, description="The model name the endpoint knows (with a template).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")
    concurrency: int = Field(8, gt=0, description="Template requests in flight at once.")
    constrained: bool = Field(
        True,
        description="Send the schema as response_format (json_schema) so the server decodes under it; false "
        "for an endpoint without structured outputs (replies are parsed and checked all the same).",
    )
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for template requests.")
    max_tokens: int = Field(512, gt=0, description="Longest reply to a template request, in tokens.")
    usd_per_million_input: float = Field(0.0, ge=0, description="Price of prompt tokens; 0: unpriced.")
    usd_per_million_output: float = Field(0.0, ge=0, description="Price of reply tokens; 0: unpriced.")
    environment_rows: bool = Field(
        True,
        description="Rows must be loadable by an environment (prompt, answer, info); false for another "
        "table, such as a pool of window titles that a generator reads.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataGenerateConfig:
        if self.generator and self.template:
            raise ValueError("give a generator or a template, not both")
        if self.template and not (self.base_url and self.model):
            raise ValueError("a template is sent to a model: give base_url and model too")
        return self

    @field_validator("levels", mode="before")
    @classmethod
    def _levels_as_written(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        levels = {}
        for part in filter(None, (piece.strip() for piece in value.split(","))):
            level, _, share = part.partition("=")
            try:
                levels[int(level)] = float(share)
            except ValueError:
                raise ValueError(f"'{part}' is not level=share, as in 1=0.5,2=0.3,3=0.2") from None
        return levels

    @field_validator("levels")
    @classmethod
    def _shares(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        if value is None:
            return None
        if not value or any(share <= 0 for share in value.values()):
            raise ValueError("every level needs a share above 0, as in 1=0.5,2=0.3,3=0.2")
        if abs(sum(value.values()) - 1) > 1e-6:
            raise ValueError(f"the shares sum to {sum(value.values()):g}, not 1")
        return value


# -- data filter ---------------------------------------------------------------------------------------


class DataFilterConfig(Section):
    """Dataset filtering: schema, user checks, the environment's oracle, duplicates, contamination, split."""

    input: str | None = Field(None, description="The JSONL rows to filter (prompt, answer, info) (required).")
    out: str | None = Field(
        None,
        description="The JSONL file of accepted train-split rows (required); the held-out rows go to "
        "<stem>.held_out.jsonl and the rejected ones to <stem>.rejected.jsonl beside it.",
    )
    # Not ``schema``: that name is pydantic's own.
    row_schema: str | None = Field(
        None,
        description="What every row must satisfy: a JSON Schema file (.json) or a pydantic model "
        "(path.py:Model or module:Model) (--schema); none: no schema stage.",
    )
    checks: list[str] = Field(
        default_factory=list,
        description="Checks, path.py:function or module:function, each called as fn(row): a string, or a "
        "(reason, detail) pair, rejects the row with that reason; None accepts it (--check, repeatable).",
    )
    env: str | None = Field(
        None,
        description="An environment whose rubric must give each row's gold reply its maximum total "
        "(the oracle stage); none: no oracle stage.",
    )
    env_args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the environment's load_environment()."
    )
    dedup: Literal["exact", "near", "none"] = Field(
        "exact",
        description="Duplicate prompts: 'exact' (same text once whitespace and case are normalised), 'near' "
        "(also MinHash-estimated Jaccard of word 3-grams >= near_threshold) or 'none'.",
    )
    near_threshold: float = Field(
        0.9,
        description="Jaccard similarity at which two prompts are near duplicates (dedup and contamination).",
    )
    held_out: float = Field(
        0.1,
        description="Fraction of the accepted rows for the held-out split, chosen by a hash of the prompt "
        "(the same prompt always lands on the same side).",
    )
    contamination: list[str] = Field(
        default_factory=list,
        description="JSONL files (an eval set) whose prompts no accepted row may repeat or nearly repeat "
        "(--contamination, repeatable).",
    )
    judge_base_url: str | None = Field(
        None,
        description="An OpenAI-compatible endpoint whose model judges every row left (the judge stage, "
        "last): it replies with a reason and accept true/false, under a JSON Schema; none: no judge stage.",
    )
    judge_model: str | None = Field(None, description="The judge's model name at judge_base_url.")
    judge_api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the judge's API key."
    )
    judge_prompt: str | None = Field(
        None,
        description="A template file for the judge's message, with {prompt} and {answer}; none: a built-in "
        "one asking whether the answer is right and the task well posed.",
    )
    judge_concurrency: int = Field(8, gt=0, description="Judge requests in flight at once.")

    @field_validator("near_threshold")
    @classmethod
    def _threshold(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"near_threshold must be in (0, 1], got {value}")
        return value

    @field_validator("held_out")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"held_out must be in [0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _judge(self) -> DataFilterConfig:
        if bool(self.judge_base_url) != bool(self.judge_model):
            raise ValueError("the judge stage needs both judge_base_url and judge_model")
        return self
