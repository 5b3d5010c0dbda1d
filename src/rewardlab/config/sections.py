"""The tables commands share: which model, which environment, how to sample, how to optimize, LoRA."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from rewardlab.config.base import Section

ENDPOINT_ONLY = "training needs a local model, not an endpoint: endpoints are for eval and compare"


class ModelConfig(Section):
    """A model loaded here: what training, SFT and the demo start from."""

    name_or_path: str = Field(
        "tiny",
        description="Model to start from: a built-in tiny model (tiny, tiny-qwen2, tiny-25m), a packaged "
        "model (smollm2-135m), a local Hugging Face directory, a PEFT adapter directory, a run (id or "
        "directory), or a Hub name.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    device: str = Field(
        "auto", description="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1'..."
    )

    # Runs recorded before the endpoint fields moved to eval and compare carry them at their defaults.
    ENDPOINT_DEFAULTS: ClassVar[dict[str, Any]] = {
        "base_url": None,
        "api_key_env": "OPENAI_API_KEY",
        "max_concurrency": 16,
        "timeout_s": 120.0,
        "max_retries": 4,
        "backoff_s": 0.25,
    }
    not_here: ClassVar[dict[str, str]] = dict.fromkeys(ENDPOINT_DEFAULTS, ENDPOINT_ONLY)

    @model_validator(mode="before")
    @classmethod
    def _drop_recorded_endpoint_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "base_url" in cls.model_fields:
            return data
        defaults = cls.ENDPOINT_DEFAULTS
        return {key: value for key, value in data.items() if key not in defaults or value != defaults[key]}


class EvalModelConfig(ModelConfig):
    """A model loaded here, or one served by an OpenAI-compatible endpoint: what eval and compare measure."""

    not_here: ClassVar[dict[str, str]] = {}

    base_url: str | None = Field(
        None,
        description="An OpenAI-compatible endpoint (http://localhost:8000/v1, vLLM, a hosted API) to sample "
        "from instead of loading a model; name_or_path is then the model name the server knows.",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the endpoint's API key (unset: a placeholder, for "
        "key-less local servers).",
    )
    max_concurrency: int = Field(16, gt=0, description="Most requests in flight to the endpoint at once.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds one request may take before it is retried.")
    max_retries: int = Field(
        4, ge=0, description="Retries of a request that hit 429, 5xx, a timeout or a dropped connection."
    )
    backoff_s: float = Field(
        0.25, ge=0, description="First retry delay; it doubles on every retry (with jitter, at most 30s)."
    )

    @model_validator(mode="after")
    def _precision_is_the_servers(self) -> EvalModelConfig:
        # Said rather than ignored: a user who asks for bfloat16 from an endpoint would read its numbers as
        # bfloat16 ones.
        if self.base_url is not None and self.dtype != "float32":
            raise ValueError(
                f"dtype = '{self.dtype}' applies to a model loaded here; the endpoint at base_url serves in "
                "its own precision"
            )
        return self


class LoraConfig(Section):
    enabled: bool = Field(True, description="Train a LoRA adapter; false trains every weight.")
    rank: int = Field(16, gt=0, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' for every linear layer."
    )
    quantize: Literal["none", "4bit"] = Field(
        "none",
        description="'4bit': QLoRA, the frozen base loaded in 4-bit NF4 by bitsandbytes (bfloat16 compute), "
        "the adapters trained over it in float32; needs a CUDA GPU and pip install 'rewardlab[qlora]'.",
    )

    @model_validator(mode="after")
    def _quantized_base_needs_lora(self) -> LoraConfig:
        if self.quantize != "none" and not self.enabled:
            raise ValueError(
                f"quantize = '{self.quantize}' needs LoRA: a quantized base is frozen integer codes "
                "that take no gradient, so full fine-tuning cannot update it (QLoRA trains float adapters "
                "over it); set enabled = true, or quantize = 'none' to train every weight"
            )
        return self


class EnvConfig(Section):
    # A default environment's arguments are that environment's: naming another one starts from none.
    default_follows: ClassVar[dict[str, str]] = {"args": "name"}

    name: str = Field(
        "arithmetic", description="Environment: built-in name, installed name, .py file or module."
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for load_environment()."
    )


class SamplingConfig(Section):
    temperature: float = Field(
        1.0, ge=0, description="Sampling temperature; 0 (anything below 1e-5) is greedy."
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(
        0, ge=0, description="Sample among the k likeliest tokens only (before top_p); 0 keeps all of them."
    )
    # "auto" rather than None: a TOML file can write it, so a saved config says what the run did.
    max_new_tokens: int | Literal["auto"] = Field(
        "auto",
        description="Most tokens generated per model turn; 'auto': the environment's budget for the model "
        "(16 for the tiny character models, more for a subword model with a chat template).",
    )
    stop: list[str] = Field(default_factory=list, description="Strings that end a turn (besides EOS).")
    draw: Literal["multinomial", "inverse_cdf"] = Field(
        "multinomial",
        description="How a local model's tokens are drawn from the same distribution: 'multinomial' "
        "(torch.multinomial: a random number per vocabulary entry and row at every step) or 'inverse_cdf' "
        "(one per row: SmolLM2's bfloat16 generations ran 1.33x faster on a CPU, BENCHMARKS.md). The same "
        "distribution; the random streams differ, so the same seed gives other samples.",
    )
    response_format: dict | None = Field(
        None,
        description="OpenAI's response_format for every model turn: {type = 'json_object'} or {type = "
        "'json_schema', json_schema = {name = ..., schema = {...}}}; a local model is held to it by "
        "grammar-constrained decoding (format rewards are then moot), an endpoint is sent it.",
    )

    @field_validator("response_format", mode="before")
    @classmethod
    def _response_format(cls, value: Any) -> Any:
        from rewardlab.sampling.structured import parse_response_format

        return parse_response_format(value)  # None for plain text; one line naming what is wrong

    @field_validator("max_new_tokens", mode="before")
    @classmethod
    def _none_is_auto(cls, value: Any) -> Any:
        return "auto" if value is None else value  # None: what configs recorded before "auto"

    @field_validator("max_new_tokens")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive number of tokens or 'auto'")
        return value

    def max_new_tokens_for(self, env: Any) -> int:
        """The token budget of one model turn: this config's, or ``env``'s default for its prompt style."""
        return env.default_max_new_tokens if self.max_new_tokens == "auto" else self.max_new_tokens

    def params_for(self, env: Any, n: int, **extra: Any):
        """The :class:`~rewardlab.sampling.base.SamplingParams` of ``n`` samples a prompt on ``env``, with
        ``extra`` fields (``logprobs``, ``seed``) as given."""
        from rewardlab.sampling.base import SamplingParams

        return SamplingParams(
            n=n,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens_for(env),
            stop=self.stop,
            response_format=self.response_format,
            draw=self.draw,
            **extra,
        )


class OptimizerConfig(Section):
    """AdamW with a learning-rate schedule and gradient clipping; the defaults are GRPO's."""

    learning_rate: float = Field(5e-5, gt=0, description="Peak AdamW learning rate.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Decay after warmup."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup, in optimizer steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.99, ge=0, lt=1, description="AdamW beta2.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping by global norm.")

    @property
    def betas(self) -> tuple[float, float]:
        return (self.adam_beta1, self.adam_beta2)


OPTIMIZER_FIELDS = tuple(OptimizerConfig.model_fields)


# The experiment trackers `report_to` accepts (rewardlab.trackers.TRACKERS implements each).
TrackerName = Literal["tensorboard", "wandb", "mlflow", "trackio"]


def _comma_separated(value: Any) -> Any:
    """``--set report_to=tensorboard,wandb`` as well as a TOML list."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


ReportTo = Annotated[
    list[TrackerName],
    BeforeValidator(_comma_separated),
    AfterValidator(lambda names: list(dict.fromkeys(names))),
]
REPORT_TO = (
    "Experiment trackers that get every metric the run store gets: tensorboard (<run dir>/tensorboard), "
    "wandb, mlflow (MLFLOW_TRACKING_URI, else <runs_dir>/mlflow), trackio; each needs its extra, "
    "pip install 'rewardlab[wandb]'. Empty: none."
)


def check_precision(lora: LoraConfig, dtype: str, where: str = "") -> None:
    """Full fine-tuning updates the weights themselves; in half precision (with no float32 master copy)
    most small updates would round away. LoRA keeps its adapters in float32 over a half-precision base."""
    if not lora.enabled and dtype != "float32":
        raise ValueError(
            f"full fine-tuning in {dtype} would round small updates away (there is no float32 master copy): "
            f'set model.dtype = "float32" or {where}lora.enabled = true'
        )


class DynamicSamplingConfig(Section):
    """DAPO's dynamic sampling: a step trains only on groups whose rewards differ."""

    enabled: bool = Field(
        False,
        description="Drop groups whose rewards are all equal (advantage 0: no signal, yet they count in the "
        "loss's normalisers) and draw more prompts until prompts_per_step groups with signal are found.",
    )
    max_draws: int = Field(
        4,
        gt=0,
        description="Most rounds of sampling per step (the first included); if the batch is still short "
        "after them, the step trains on the groups with signal it has.",
    )


class EntropyControlConfig(Section):
    """Ways to keep the policy exploring; each is off by default."""

    target: float | None = Field(
        None,
        gt=0,
        description="Adaptive entropy bonus (Skywork-OR1): a target mean token entropy in nats. The bonus "
        "coefficient rises by coef_step each step the sampled entropy is below the target and falls by "
        "coef_step (not below 0) each step it is above; the loss subtracts coefficient x entropy.",
    )
    coef_step: float = Field(
        0.005, gt=0, description="How much the adaptive bonus coefficient moves per step."
    )
    coef_max: float = Field(0.1, gt=0, description="Largest adaptive bonus coefficient.")
    clip_cov_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Clip-Cov (Cui et al. 2025): this fraction of tokens, drawn at random among those whose "
        "centred covariance of log-prob and advantage lies in [cov_low, cov_high], gets no gradient; the "
        "paper uses 2e-4. 0: off.",
    )
    cov_low: float = Field(1.0, description="Clip-Cov: lower bound of the covariance window.")
    cov_high: float = Field(5.0, description="Clip-Cov: upper bound of the covariance window.")
    kl_cov_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="KL-Cov (Cui et al. 2025): the tokens with the largest covariance of log-prob and "
        "advantage, this fraction of them, get a penalty kl_cov_coef x |log pi - log pi_old|; the paper uses "
        "2e-3. Needs num_iterations > 1 (on a single pass the ratio is 1 and the penalty has no gradient). "
        "0: off.",
    )
    kl_cov_coef: float = Field(1.0, gt=0, description="KL-Cov's penalty coefficient.")
    advantage_clip: float | None = Field(
        None, gt=0, description="Clip every advantage to [-advantage_clip, +advantage_clip]. None: off."
    )

    @model_validator(mode="after")
    def _window(self) -> EntropyControlConfig:
        if self.cov_low > self.cov_high:
            raise ValueError(f"cov_low ({self.cov_low}) must not exceed cov_high ({self.cov_high})")
        return self


class CurriculumConfig(Section):
    """Which difficulty levels a train run draws its prompts from, step by step (see docs/training.md)."""

    mode: Literal["off", "fixed", "adaptive"] = Field(
        "off",
        description="off: every example shuffled together (the run as without a curriculum); fixed: the "
        "levels in order (lowest info['level'] first) on a schedule of steps; adaptive: promote to the next "
        "level when the pass rate on the current one reaches promote_at.",
    )
    steps_per_level: int = Field(
        0,
        ge=0,
        description="fixed: steps on each level before the next (0: max_steps shared equally among the "
        "levels); the last level runs to the end.",
    )
    window: int = Field(
        5,
        gt=0,
        description="adaptive: the pass rate is over the current level's rollouts of its last N steps.",
    )
    promote_at: float = Field(
        0.8,
        gt=0,
        le=1,
        description="adaptive: the pass rate, over a full window on the current level, that promotes.",
    )
    pass_threshold: float = Field(
        1.0,
        description="A rollout passes when the rubric's primary component is >= this (an errored one fails).",
    )
    review_share: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Share of each step's prompts drawn from the easier levels already left behind "
        "(rounded down), so they are not forgotten.",
    )


HealthAlert = Literal[
    "entropy_collapse",
    "clip_spike",
    "kl_blowup",
    "grad_norm_spike",
    "length_explosion",
    "truncation_surge",
    "no_signal",
    "reward_hacking",
]
HealthAction = Literal["warn", "checkpoint", "stop"]


class HealthConfig(Section):
    """Alerts raised while a train run goes, from the metrics it has logged so far.

    An alert prints one warning line, is stored with the run (metric ``alerts/<name>`` and the summary's
    ``alerts``) and takes its action. The defaults stay quiet on the demo's run (docs/training.md).
    """

    enabled: bool = Field(True, description="Watch the run's metrics and raise alerts; false raises none.")
    baseline_steps: int = Field(
        5,
        gt=0,
        description="A metric's early level is its mean over the run's first this many steps (over the steps "
        "before, while the run is younger): entropy_collapse, length_explosion and truncation_surge compare "
        "with it.",
    )
    entropy_min_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description="entropy_collapse: the entropy fell below this fraction of its early level ...",
    )
    entropy_min: float = Field(
        0.01, ge=0, description="... or below this many nats per token (entropy_collapse too)."
    )
    clip_fraction_max: float = Field(
        0.3,
        gt=0,
        description="clip_spike: clip/low_fraction + clip/high_fraction above this (both are 0 with "
        "num_iterations = 1, where the ratio is 1).",
    )
    kl_max: float = Field(
        1.0, gt=0, description="kl_blowup: kl (logged with beta > 0) above this many nats per token."
    )
    grad_norm_factor: float = Field(
        20.0,
        gt=1,
        description="grad_norm_spike: grad_norm (before clipping) above this multiple of its median over the "
        "previous grad_norm_window steps (judged once baseline_steps steps came before).",
    )
    grad_norm_window: int = Field(20, gt=0, description="Steps the grad_norm median is taken over.")
    length_factor: float = Field(
        3.0,
        gt=1,
        description="length_explosion: completion/mean_length above this multiple of its early level.",
    )
    truncation_rise: float = Field(
        0.3,
        gt=0,
        le=1,
        description="truncation_surge: completion/truncated_fraction at least this much above its early "
        "level (0.3: 30 more rollouts in 100 cut off at max_new_tokens).",
    )
    no_signal_steps: int = Field(
        5,
        gt=0,
        description="no_signal: every group scored alike (groups/zero_std_fraction = 1) this many steps in a "
        "row, so there was nothing to learn from.",
    )
    hacking_min_steps: int = Field(
        20,
        ge=6,
        description="reward_hacking: the audit's test (rewardlab audit: a rewarded auxiliary rising more "
        "than the primary, or a measurement doubling while the primary stays flat, beyond noise) on the "
        "steps so far, from this many on.",
    )
    hacking_hold_steps: int = Field(
        5,
        gt=0,
        description="reward_hacking fires once the test has flagged a component this many steps in a row (a "
        "test judged afresh every step passes by chance now and then).",
    )
    rearm_steps: int = Field(
        10,
        gt=0,
        description="An alert that fired fires again only after its condition was clear this many steps in a "
        "row, so one that keeps holding (or flickers) prints once.",
    )
    default_action: HealthAction = Field(
        "warn",
        description="What an alert does: warn (print and record it), checkpoint (also save a resumable "
        "checkpoint now) or stop (checkpoint, then end the run with status stopped; --resume continues it).",
    )
    actions: dict[HealthAlert, HealthAction] = Field(
        default_factory=dict,
        description="The action of each alert named here, e.g. {entropy_collapse = 'stop', kl_blowup = "
        "'checkpoint'}; the others take default_action.",
    )

    def action(self, alert: str) -> str:
        return self.actions.get(alert, self.default_action)  # type: ignore[call-overload]


class BudgetConfig(Section):
    """What a run costs, priced, and the limits that stop it (docs/training.md, "Budget and cost")."""

    usd_per_hour: float = Field(
        0.0,
        ge=0,
        description="Price per hour, in US dollars, of the machine the run trains on (its accelerators, CPU "
        "and memory together: a rented GPU instance's hourly rate); times the run's wall time. 0: unpriced.",
    )
    usd_per_million_tokens: float = Field(
        0.0,
        ge=0,
        description="Price per million tokens, for work billed by the token (rollouts served by an "
        "endpoint); times cost/tokens, the prompt and completion tokens of the run's rollouts (an LLM "
        "judge's tokens are not counted yet). 0: unpriced.",
    )
    max_usd: float | None = Field(
        None,
        gt=0,
        description="Stop the run once it has cost this much (status stopped; a train run saves a checkpoint "
        "that --resume continues with a larger budget). --budget-usd on rewardlab train.",
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Stop the run once it has run this many minutes of wall time, resumed parts included "
        "(status stopped; a train run saves a checkpoint). --budget-minutes on rewardlab train.",
    )

    @model_validator(mode="after")
    def _priced(self) -> BudgetConfig:
        if self.max_usd is not None and not (self.usd_per_hour or self.usd_per_million_tokens):
            raise ValueError(
                "max_usd needs a price to count against: set usd_per_hour (the machine) or "
                "usd_per_million_tokens"
            )
        return self
