"""Data-parallel GRPO: one process per device, each sampling, scoring and back-propagating its share of a
step's groups, all taking the same optimizer step.

Started by ``torchrun`` or ``accelerate launch``, which set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` for every process::

    torchrun --nproc-per-node 2 -m rewardlab train --config train.toml

Without them (``python -m rewardlab train``) the world is this one process and every helper here is the
identity: nothing is communicated and a single process trains exactly as it always has.

Why a step over N processes is the step one process would take:

* **Prompts.** The step's prompts are chosen as one process chooses them; process ``r`` takes the ``r``-th
  contiguous share of the groups (``prompts_per_step`` must divide by the world size). A group never straddles
  two processes, so its advantages are computed where it was sampled, before anything is combined.
* **Sampling.** Each group draws from its own stream, seeded by (seed, step, round, global group index)
  (``TrainConfig.seed_per_group``, switched on here), so N processes draw the completions one process would.
* **Gradients.** ``policy_loss`` is normalised by the whole batch's sequence and token counts (summed over
  the processes), so the processes' gradients add up to the whole batch's. One all-reduce sums them after
  the backward passes, before the norm is clipped, and every process takes the same AdamW step on the same
  weights.
* **Metrics.** Every process's rollouts are gathered and the loss statistics summed, so what is logged, what
  the curriculum and the budget count and what the health checks judge is the whole batch.
* **Writing.** Only rank 0 writes (run store, checkpoints, final adapter, report) or prints; the others see
  the store read-only and receive the run from it. What rank 0's clock decides (a budget's time limit, an
  alert) is sent to the others, so all stop at the same step.
* **Resume.** Every process loads the checkpoint rank 0 wrote (the run directory must be visible to all of
  them); it records the world size, and resuming it on another is refused.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from rewardlab.config import TrainConfig
from rewardlab.errors import RewardlabError
from rewardlab.sampling.base import derived_seed

T = TypeVar("T")

# Gradients are summed in flat buffers of at most this many elements (256 MB of float32): a LoRA adapter is
# one buffer; a full fine-tune does not need a second copy of every gradient at once.
BUCKET_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: ``rank`` of ``size``, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes and prints."""
        return self.rank == 0

    # -- the step's share -----------------------------------------------------------------------------

    def first(self, count: int) -> int:
        """The global index of this process's first item when ``count`` items are split evenly."""
        return self.rank * (count // self.size)

    def shard(self, items: list[T]) -> list[T]:
        """This process's contiguous share of ``items`` (all of them in a world of one)."""
        if self.size == 1:
            return items
        share = len(items) // self.size
        return items[self.first(len(items)) : self.first(len(items)) + share]

    # -- collectives (each one a no-op in a world of one) --------------------------------------------------

    def total(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the processes (float64, exact for counts below 2**53)."""
        if self.size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self._device())
        torch.distributed.all_reduce(tensor)
        return tuple(tensor.tolist())

    def largest(self, *values: int) -> tuple[int, ...]:
        """Each value's maximum over the processes."""
        if self.size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.int64, device=self._device())
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tuple(tensor.tolist())

    def everywhere(self, flag: bool) -> bool:
        """Whether ``flag`` holds in every process."""
        if self.size == 1:
            return flag
        tensor = torch.tensor([int(flag)], device=self._device())
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MIN)
        return bool(tensor.item())

    def combined_stats(self, stats: dict[str, float], largest: Iterable[str], same: Iterable[str]) -> dict:
        """The whole batch's loss statistics from each process's: each process's entries are already its share
        of the whole (weighted by the global token count), so they are summed; ``largest`` take the maximum,
        ``same`` (computed after the gradients were summed) are the same everywhere and kept."""
        if self.size == 1:
            return stats
        largest, same = set(largest), set(same)
        summed = [name for name in stats if name not in largest | same]
        totals = self.total(*(stats[name] for name in summed))
        maxima = [name for name in stats if name in largest]
        tensor = torch.tensor([stats[name] for name in maxima], dtype=torch.float64, device=self._device())
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return {
            **stats,
            **dict(zip(summed, totals, strict=True)),
            **dict(zip(maxima, tensor.tolist(), strict=True)),
        }

    def gather(self, value: T) -> list[T]:
        """Every process's ``value`` (pickled), in rank order."""
        if self.size == 1:
            return [value]
        gathered: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value``, in every process."""
        if self.size == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def from_main(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` done by rank 0 alone, its result (or its error, raised again) in every process; the
        others wait for it, so whatever it wrote is there when they go on."""
        if self.size == 1:
            return work(*args)
        value = None
        if self.main:
            try:
                value = work(*args)
            except Exception as error:  # the others stop too (quietly: only rank 0 prints)
                self.broadcast((None, str(error) or type(error).__name__))
                raise
        value, message = self.broadcast((value, None))
        if message is not None:
            raise RewardlabError(f"rank 0 stopped: {message}")
        return value

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Sum every process's gradients into each trainable parameter, in place.

        A manual all-reduce rather than ``DistributedDataParallel``: DDP's reducer learns which parameters
        take part from a call to the wrapped module's ``forward``, and the trainer never makes one: it
        computes through the model's fused :class:`~rewardlab.models.forward.Forward` on the weights (and
        several micro-batches and passes come before each optimizer step). Summing once after the backward
        passes is the whole of what DDP would do here; a LoRA adapter's gradients are a few megabytes, one
        flat buffer, one all-reduce. A parameter without a gradient on some process counts as zero there.
        """
        if self.size == 1:
            return
        trainable = [p for p in parameters if p.requires_grad]
        for p in trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self._in_buckets([p.grad for p in trainable], torch.distributed.all_reduce)

    def broadcast_parameters(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Rank 0's values of ``parameters`` in every process (they start identical: the same seed, the same
        checkpoint; this makes sure)."""
        if self.size == 1:
            return
        with torch.no_grad():
            self._in_buckets([p.data for p in parameters], lambda flat: torch.distributed.broadcast(flat, 0))

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The block run by each node's first process (``local_rank`` 0) before the others, so that what it
        writes to a cache (a model built or downloaded) is there for them rather than written twice."""
        if self.local_rank != 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()

    def _in_buckets(self, tensors: list[torch.Tensor], collective: Callable[[torch.Tensor], Any]) -> None:
        """``collective`` on flat buffers of ``tensors`` (grouped by device and dtype), copied back."""
        groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for tensor in tensors:
            groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
        for group in groups.values():
            bucket: list[torch.Tensor] = []
            for tensor in [*group, None]:
                full = tensor is None or sum(t.numel() for t in bucket) + tensor.numel() > BUCKET_ELEMENTS
                if bucket and full:
                    flat = torch.cat([t.reshape(-1) for t in bucket])
                    collective(flat)
                    offset = 0
                    for t in bucket:
                        t.copy_(flat[offset : offset + t.numel()].view_as(t))
                        offset += t.numel()
                    bucket = []
                if tensor is not None:
                    bucket.append(tensor)

    def _device(self) -> torch.device:
        """Where the small tensors of a collective live: the process's GPU under nccl, else the CPU."""
        if torch.distributed.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    # -- the trainer's view ------------------------------------------------------------------------------

    def configured(self, config: TrainConfig) -> TrainConfig:
        """``config`` as this world trains it: settings that cannot work over several processes refused in a
        line, per-group seeding switched on (several processes draw what one process would)."""
        if self.size == 1:
            return config
        if config.prompts_per_step % self.size:
            raise RewardlabError(
                f"prompts_per_step = {config.prompts_per_step} does not split over {self.size} processes: "
                f"make it a multiple of {self.size} (every process samples whole groups)"
            )
        if config.dynamic_sampling.enabled:
            raise RewardlabError(
                "dynamic_sampling is not supported in data-parallel training yet (the processes would have "
                "to agree on its extra rounds): turn it off or train in one process"
            )
        if getattr(config, "rollout_engine", "local") != "local":
            raise RewardlabError(
                "rollout_engine = 'server' is not supported in data-parallel training yet: sample in process "
                "(rollout_engine = 'local') or train in one process"
            )
        if config.model.device.startswith("cuda:"):
            raise RewardlabError(
                f"model.device = {config.model.device} puts every process on one GPU: use 'auto' or 'cuda' "
                "(each process takes the GPU of its LOCAL_RANK)"
            )
        return config.model_copy(update={"seed_per_group": True})

    def store(self, store):
        """The run store as this process uses it: itself on rank 0, a read-only view elsewhere."""
        return store if self.main else ReadOnlyStore(store)

    def counters(self) -> dict[str, float]:
        """What a new run's checkpoint counters record of the world (nothing in a world of one)."""
        return {"world_size": float(self.size)} if self.size > 1 else {}

    def check_resume(self, totals: dict, run_id: str) -> None:
        """Refuse to resume a run on another number of processes than it was trained on."""
        trained = int(totals.get("world_size", 1))
        if trained != self.size:
            raise RewardlabError(
                f"run '{run_id}' was trained by {_processes(trained)} and is resumed by "
                f"{_processes(self.size)}: resume it with {trained} (torchrun --nproc-per-node {trained})"
            )

    def seed_streams(self, config: TrainConfig, step: int) -> Callable[[int, int], list[int]] | None:
        """The group seeds of ``step`` (``draw_groups``'s ``seeds``), or None when a step is one stream:
        group ``g`` of round ``r`` (its global index, whatever process samples it) is seeded by
        (seed, step, r, g)."""
        if not config.seed_per_group:
            return None
        first = self.first(config.prompts_per_step)

        def seeds(draw: int, count: int) -> list[int]:
            return [derived_seed(config.seed, step, draw, first + group) for group in range(count)]

        return seeds

    def whole(self, drawn):
        """Every process's :class:`~rewardlab.train.dynamic_sampling.Drawn` as one, in global group order."""
        if self.size == 1:
            return drawn
        parts = self.gather(drawn)
        return type(drawn)(
            rollouts=[r for part in parts for r in part.rollouts],
            scored=[s for part in parts for s in part.scored],
            zero_std=torch.cat([part.zero_std for part in parts]),
            train=[s for part in parts for s in part.train],
            draws=max(part.draws for part in parts),
        )


def _processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes"


class ReadOnlyStore:
    """A run store as a process other than rank 0 sees it: it reads what rank 0 wrote and writes nothing
    (every other method does nothing; ``failure_recorded`` records nothing)."""

    READS = frozenset(
        {"root", "db_path", "get", "metrics", "metric_table", "rollouts", "rollout_counts", "list"}
    )

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name: str):
        if name in self.READS:
            return getattr(self._store, name)
        if name == "failure_recorded":
            return lambda run: contextlib.nullcontext()
        return lambda *args, **kwargs: None


def world_for(config: TrainConfig) -> World:
    """This process's world: from the launcher's environment variables (the process group joined once, on
    nccl for a GPU, gloo for the CPU), or a world of one when nothing launched several processes."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        from rewardlab.models.loading import pick_device

        gpu = pick_device(config.model.device).type == "cuda"
        if gpu:
            torch.cuda.set_device(local_rank)  # "cuda" (and "auto") now mean this process's GPU
        torch.distributed.init_process_group("nccl" if gpu else "gloo")
        atexit.register(_leave)
    if rank != 0:
        quiet_followers()
    return World(rank, size, local_rank)


def quiet_followers() -> None:
    """Only rank 0 prints: progress bars, notes, results and one-line errors."""
    from rewardlab import console

    os.environ["REWARDLAB_QUIET"] = "1"
    console.console.quiet = True
    console.notes.quiet = True


def _leave() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
