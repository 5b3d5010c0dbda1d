"""Where a training step's rollouts are sampled: in process (``local``) or by an inference server.

The trainer asks its engine for each step's batch (:meth:`draw`), tells it when the policy changed
(:meth:`after_update`), and adds what it measured to the step's metrics (:meth:`step_metrics`).

``local`` samples with the model being trained, as the trainer always has: each step's batch by the weights
of the step before, on the same forward.

``server`` samples through an OpenAI-compatible server that loads LoRA adapters at run time
(:mod:`rewardlab.sampling.server_rollouts`). After every update the adapter is written whole (renamed into
place, so the server never reads half of one) to ``rollout_adapter_dir`` under a name of its own (``<run
id>-step<N>``) and loaded with ``POST /v1/load_lora_adapter``; sampling then names it as the model, and the
adapters no batch can still be sampled from are unloaded and their directories removed. Before the run is
created the server is asked for its models and made to load (and unload) the starting adapter, so a server
that cannot be reached, cannot load adapters or cannot read ``rollout_adapter_dir`` is one line before
anything is written. With ``max_off_policy_steps = k >= 1`` the batches of the next ``k`` steps are sampled
while a step trains (:mod:`rewardlab.train.async_rollouts`), and each adapter is written (from a copy of its
weights) and loaded in the background while the next step trains; the loss's importance ratio uses the
log-probs the server sampled with, whatever the lag.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from rewardlab import atomic
from rewardlab.console import say
from rewardlab.errors import RewardlabError
from rewardlab.sampling.base import Sampler
from rewardlab.sampling.server_rollouts import RolloutServer, ServerSampler
from rewardlab.train.async_rollouts import Producer, Versions
from rewardlab.types import ScoredRollout

SampleStep = Callable[[int, Sampler], object]  # (step, sampler) -> the step's batch (a ``Drawn``)


class LocalRollouts:
    """Rollouts sampled in process by the model being trained (the trainer's sampler)."""

    sampling_logprobs = False  # the trainer recomputes the sampling policy's log-probs when it needs them

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self._sample: SampleStep | None = None

    @contextmanager
    def running(self, run_id: str, start_step: int, last_step: int, sample: SampleStep) -> Iterator[None]:
        self._sample = sample
        yield

    def draw(self, step: int):
        return self._sample(step, self.sampler)

    def after_update(self, step: int) -> None:
        pass

    def step_metrics(self, step: int, stats: dict[str, float]) -> dict[str, float]:
        return {}


def sampling_logprobs(scored: list[ScoredRollout], width: int, device) -> torch.Tensor:
    """(B, width): each rollout's sampling log-probs over its completion columns, 0 beyond them."""
    rows = []
    for item in scored:
        rollout = item.rollout
        values = rollout.completion_logprobs
        if values is None or len(values) != len(rollout.completion_ids or ()):
            raise RuntimeError("a rollout from the server engine lacks the sampling log-probs of its tokens")
        rows.append(list(values) + [0.0] * (width - len(values)))
    return torch.tensor(rows, dtype=torch.float32, device=device)


class ServerRollouts:
    """Rollouts sampled by an inference server from the adapter of the latest policy (see the module)."""

    sampling_logprobs = True

    def __init__(self, config, model, tokenizer):
        self.config = config
        self.model, self.tokenizer = model, tokenizer
        self.ahead = config.max_off_policy_steps
        self.local_dir = Path(config.rollout_adapter_dir).expanduser().resolve()
        server_dir = config.rollout_adapter_server_dir
        self.server_dir = server_dir.rstrip("/") if server_dir else str(self.local_dir)
        self.server = RolloutServer(
            config.rollout_base_url,
            config.rollout_api_key_env,
            timeout_s=config.rollout_timeout_s,
            max_concurrency=config.rollout_max_concurrency,
        )
        self.sampler = ServerSampler(self.server, tokenizer, config.rollout_max_concurrency)
        self.versions = Versions()
        self.loaded: dict[int, str] = {}  # version -> served name
        self.prefix = f"rewardlab-{uuid.uuid4().hex[:8]}"
        self.producer: Producer | None = None
        self.sampled_by: dict[int, int] = {}  # step -> the version that sampled its batch
        self.sync_seconds = 0.0
        self.files: dict[str, bytes] = {}  # an adapter's files but its weights, the same at every step
        # With max_off_policy_steps >= 1 the adapters are written and loaded in the background, in order.
        self.pusher = ThreadPoolExecutor(1, thread_name_prefix="rewardlab-push") if self.ahead else None
        self.pushing: Future | None = None
        try:
            self.server.check()
            self._probe()
        except BaseException:
            self.close()
            raise

    # -- adapters on the server -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The adapter's weights as they are now, as PEFT saves them (a copy: the next update may go on)."""
        from peft import get_peft_model_state_dict

        return {
            key: value.detach().to("cpu", copy=True)
            for key, value in get_peft_model_state_dict(self.model).items()
        }

    def _write(self, name: str, weights: dict[str, torch.Tensor] | None = None) -> str:
        """An adapter written whole to ``<rollout_adapter_dir>/<name>`` (the model's as it is now, or
        ``weights``); its path as the server sees it. No tokenizer: the server has the base's."""
        from rewardlab.models.adapters import write_base_record

        try:
            self.local_dir.mkdir(parents=True, exist_ok=True)
            with atomic.replacing_directory(self.local_dir / name) as partial:
                if weights is None or not self.files:
                    self.model.save_pretrained(partial)
                    write_base_record(partial, self.model.get_base_model().name_or_path)
                    self.files = {f.name: f.read_bytes() for f in partial.iterdir() if f.suffix == ".json"}
                if weights is not None:
                    for file_name, content in self.files.items():
                        (partial / file_name).write_bytes(content)
                    save_file(weights, partial / "adapter_model.safetensors", metadata={"format": "pt"})
        except OSError as error:
            raise RewardlabError(
                f"cannot write adapters to rollout_adapter_dir {self.local_dir}: {error.strerror or error}"
            ) from None
        return f"{self.server_dir}/{name}"

    def _probe(self) -> None:
        """Load the starting adapter once and unload it: the server can load adapters, from this directory."""
        name = f"{self.prefix}-probe"
        try:
            self.server.load_adapter(name, self._write(name))
            self.server.unload_adapter(name)
        finally:
            shutil.rmtree(self.local_dir / name, ignore_errors=True)

    def push(self, version: int, weights: dict[str, torch.Tensor] | None = None) -> None:
        """Write and load the adapter of ``version`` (steps trained; ``weights``, or the model's now), publish
        it, unload what none needs."""
        name = f"{self.prefix}-step{version}"
        self.server.load_adapter(name, self._write(name, weights))
        self.loaded[version] = name
        self.versions.publish(version)
        # A batch still to be sampled starts from at least version - ahead; those being sampled are held.
        held = self.versions.in_use()
        for old in [v for v in self.loaded if v < version - self.ahead and v not in held]:
            self._unload(old)

    def _unload(self, version: int) -> None:
        name = self.loaded.pop(version)
        problem = self.server.unload_adapter(name)
        if problem is not None:
            say(f"[yellow]warning:[/] the rollout server did not unload adapter {name} ({problem})")
        shutil.rmtree(self.local_dir / name, ignore_errors=True)

    # -- the trainer's side ---------------------------------------------------------------------------

    @contextmanager
    def running(self, run_id: str, start_step: int, last_step: int, sample: SampleStep) -> Iterator[None]:
        """Sampling for steps ``start_step + 1 .. last_step``; everything loaded is unloaded at the end."""
        self.prefix = f"{run_id}-{uuid.uuid4().hex[:4]}"  # a second run resuming this one loads its own
        self.last_step = last_step
        seed = self.config.seed

        def sample_with(step: int, version: int):
            self.sampler.begin(self.loaded[version], seed, step)
            return sample(step, self.sampler)

        self._sample = sample_with
        try:
            self.push(start_step)
            if self.ahead:
                self.producer = Producer(sample_with, self.versions, start_step + 1, last_step, self.ahead)
                self.producer.start()
            yield
        finally:
            self.close()

    def draw(self, step: int):
        if self.producer is not None:
            item = self.producer.next(step, check=self._push_failed)
            self.sampled_by[step] = item.version
            return item.batch
        version = self.versions.latest
        self.sampled_by[step] = version
        return self._sample(step, version)

    def after_update(self, step: int) -> None:
        if step >= self.last_step:  # the last update is sampled by nobody
            return
        started = time.perf_counter()
        if self.pusher is None:
            self.push(step)  # the next step is sampled by this adapter: it must be loaded first
        else:
            # Sampling runs ahead on older adapters meanwhile: write and load this one in the background,
            # from a copy of its weights (the next update starts at once).
            self._push_failed()
            self.pushing = self.pusher.submit(self.push, step, self.snapshot())
        self.sync_seconds = time.perf_counter() - started

    def _push_failed(self) -> None:
        """Raise what went wrong loading an adapter in the background, if anything did."""
        if self.pushing is not None and self.pushing.done() and self.pushing.exception() is not None:
            raise self.pushing.exception()

    def step_metrics(self, step: int, stats: dict[str, float]) -> dict[str, float]:
        """Staleness (updates between the adapter that sampled the batch and the policy it trains), the
        first pass's largest |ratio - 1| against the server's log-probs, and the time the step spent on the
        adapter (writing and loading it; with sampling ahead, only copying its weights)."""
        metrics = {
            "async/staleness": float(step - 1 - self.sampled_by.pop(step)),
            "ratio/first_pass_max_deviation": stats["ratio_deviation"],
            "time/adapter_sync_seconds": self.sync_seconds,
        }
        self.sync_seconds = 0.0
        return metrics

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
            self.producer = None
        if self.pusher is not None:
            self.pusher.shutdown(wait=True, cancel_futures=True)  # what it loaded is unloaded below
        for version in list(self.loaded):
            self._unload(version)
        self.sampler.close()
        self.server.close()


def rollout_engine(config, model, tokenizer, sampler: Sampler) -> LocalRollouts | ServerRollouts:
    """The engine ``config.rollout_engine`` names; a server is checked here, before the run exists."""
    if config.rollout_engine == "server":
        return ServerRollouts(config, model, tokenizer)
    return LocalRollouts(sampler)
