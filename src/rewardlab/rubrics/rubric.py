"""A rubric is a list of weighted reward functions.

A reward function names what it needs and gets exactly that::

    def correct(completion, answer, parser):
        return 1.0 if parser.parse_answer(completion) == answer else 0.0

Available names: ``completion`` (the model's last reply, a string), ``completion_messages`` (every message
after the prompt), ``prompt`` (the prompt messages), ``answer``, ``info``, ``state``, ``parser``, ``example``,
``completion_tokens`` (how many tokens the model generated, ``None`` when the sampler did not report token
ids) and ``turn_tokens`` (the same, one count per model turn); a function taking ``**kwargs`` receives them
all. The total reward is the weighted sum; every component is kept, and a function that raises marks its
component as errored on that rollout instead of scoring it 0.

Where functions run (``isolation``): by default a synchronous function runs in a pool of worker processes
(:mod:`rewardlab.rubrics.runner`) with a time limit per call, so one that hangs or crashes errors its
component on that rollout and nothing else. It sees pickled copies of its arguments: what it changes in
them, or in variables it captured, stays in the worker. ``async`` functions (judges, HTTP) run in the event
loop, concurrently, under the same time limit. ``isolation="inline"`` runs synchronous functions in this
process, as plain calls: no time limit, but breakpoints and shared state work, which helps debugging.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rewardlab.errors import RewardlabError
from rewardlab.rubrics.parsers import Parser
from rewardlab.rubrics.runner import (
    DEFAULT_MEMORY_MB,
    Dispatcher,
    RewardCallError,
    Shipped,
    WorkerCall,
    as_reward,
    describe_error,
)
from rewardlab.types import Rollout, ScoredRollout


def turn_tokens(rollout: Rollout) -> list[int] | None:
    """Tokens the model generated in each of its turns; ``None`` when the sampler reported no token ids.

    Rollouts built elsewhere (by hand, or stored before turns were counted) are read from the mask: each
    run of model tokens between environment tokens is one turn.
    """
    if rollout.completion_mask is None:
        return None
    if rollout.turn_tokens:
        return list(rollout.turn_tokens)
    runs, current = [], 0
    for flag in rollout.completion_mask:
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs + [current] if current else runs


REWARD_ARGUMENTS = (
    "completion",
    "completion_messages",
    "prompt",
    "answer",
    "info",
    "state",
    "parser",
    "example",
    "completion_tokens",
    "turn_tokens",
)
ISOLATIONS = ("process", "inline")
Isolation = Literal["process", "inline"]


@dataclass
class RewardFunction:
    func: Callable[..., Any]
    weight: float
    name: str
    wants: tuple[str, ...]  # the argument names it asked for; all of them when it takes **kwargs
    is_async: bool
    timeout: float | None = None  # its own limit per call, seconds; None: the rubric's
    shipped: Shipped | None = None  # pickled for the worker processes; None: it runs in this process


def _inspect(func: Callable[..., Any], name: str) -> tuple[tuple[str, ...], bool]:
    signature = inspect.signature(func)
    wants: list[str] = []
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return REWARD_ARGUMENTS, _is_async(func)
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if parameter.name not in REWARD_ARGUMENTS:
            if parameter.default is not inspect.Parameter.empty:
                continue  # an argument with a default is the function's own business
            raise RewardlabError(
                f"reward function '{name}' asks for unknown argument '{parameter.name}'; "
                f"available: {', '.join(REWARD_ARGUMENTS)}"
            )
        wants.append(parameter.name)
    return tuple(wants), _is_async(func)


def _is_async(func: Callable[..., Any]) -> bool:
    # an object whose __call__ is a coroutine function counts too
    if inspect.iscoroutinefunction(func):
        return True
    return not inspect.isroutine(func) and inspect.iscoroutinefunction(type(func).__call__)


def _check_timeout(timeout: float, what: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise RewardlabError(f"{what} timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


class Rubric:
    """Weighted reward functions plus the parser they share.

    ``primary`` names the correctness component (the first function by default): pass@k and the
    comparison's "solved" counts are read from it. ``isolation`` says where synchronous functions run
    ("process": a shared pool of ``workers`` processes; "inline": here); ``timeout`` is the limit per call
    in seconds for isolated and async functions (:meth:`add` takes one per function); ``memory_mb`` is each
    worker process's address space (``None``: no limit), and a call that runs out of it errors with
    ``memory limit (N MB) reached`` and its worker is replaced.
    """

    def __init__(
        self,
        funcs: Sequence[Callable[..., Any]] = (),
        weights: Sequence[float] | None = None,
        parser: Parser | None = None,
        names: Sequence[str] | None = None,
        primary: str | None = None,
        *,
        isolation: Isolation = "process",
        timeout: float = 30.0,
        workers: int | None = None,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
    ):
        if isolation not in ISOLATIONS:
            raise RewardlabError(f"unknown reward isolation '{isolation}' (choose: {', '.join(ISOLATIONS)})")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise RewardlabError(f"reward workers must be a positive integer, got {workers!r}")
        if memory_mb is not None and (
            isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 1
        ):
            raise RewardlabError(f"reward memory_mb must be a positive integer or None, got {memory_mb!r}")
        self._warned: set[str] = set()
        if isolation == "process" and os.name != "posix":
            self._warn_once(
                "isolation", "reward worker processes need POSIX; reward functions run inline here"
            )
            isolation = "inline"
        self.isolation: Isolation = isolation
        self.timeout = _check_timeout(timeout, "reward")
        self.workers = workers
        self.parser = parser or Parser()
        self.functions: list[RewardFunction] = []
        self.memory_mb = memory_mb
        self._dispatcher = Dispatcher(workers, self._warn_once, memory_mb)
        weights = list(weights) if weights is not None else [1.0] * len(funcs)
        if len(weights) != len(funcs):
            raise RewardlabError(f"rubric has {len(funcs)} reward functions but {len(weights)} weights")
        names = list(names) if names is not None else [None] * len(funcs)
        for func, weight, name in zip(funcs, weights, names, strict=True):
            self.add(func, weight, name)
        self._primary = primary

    def add(
        self,
        func: Callable[..., Any],
        weight: float = 1.0,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Rubric:
        """Add a reward function. ``timeout`` overrides the rubric's for this function; without one, a
        ``reward_timeout`` attribute on the function does (the judge sets it to cover its own retries)."""
        name = name or getattr(func, "__name__", None) or f"reward_{len(self.functions)}"
        if any(f.name == name for f in self.functions):
            raise RewardlabError(f"rubric already has a reward function named '{name}'")
        if not math.isfinite(weight):
            raise RewardlabError(f"reward function '{name}' has a non-finite weight {weight}")
        wants, is_async = _inspect(func, name)
        own_timeout = timeout if timeout is not None else getattr(func, "reward_timeout", None)
        if own_timeout is not None:
            own_timeout = _check_timeout(own_timeout, f"reward function '{name}'")
        function = RewardFunction(func, float(weight), name, wants, is_async, own_timeout)
        if self.isolation == "process" and not is_async:
            function.shipped = self._dispatcher.ship(func, name)
        self.functions.append(function)
        return self

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.functions]

    @property
    def weights(self) -> dict[str, float]:
        return {f.name: f.weight for f in self.functions}

    @property
    def primary(self) -> str | None:
        if self._primary is not None:
            return self._primary
        return self.functions[0].name if self.functions else None

    def _arguments(self, rollout: Rollout) -> dict[str, Any]:
        example = rollout.example
        return {
            "completion": rollout.completion_text,
            "completion_messages": rollout.completion,
            "prompt": example.prompt,
            "answer": example.answer,
            "info": example.info,
            "state": rollout.state,
            "parser": self.parser,
            "example": example,
            "completion_tokens": (
                rollout.num_completion_tokens if rollout.completion_mask is not None else None
            ),
            "turn_tokens": turn_tokens(rollout),
        }

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _limit(self, function: RewardFunction) -> float:
        return function.timeout if function.timeout is not None else self.timeout

    @staticmethod
    def _call_inline(function: RewardFunction, arguments: dict[str, Any]) -> float | Exception:
        """A synchronous function called in this process; what it raises is returned, as gather would."""
        try:
            return as_reward(function.func(**{name: arguments[name] for name in function.wants}))
        except Exception as error:  # KeyboardInterrupt and friends propagate: they are not reward errors
            return error

    async def _call_async(self, function: RewardFunction, arguments: dict[str, Any]) -> float:
        kwargs = {name: arguments[name] for name in function.wants}
        limit = self._limit(function)
        # asyncio.wait rather than wait_for: only our deadline may read as "timed out", not a
        # TimeoutError the function raised itself
        task = asyncio.ensure_future(function.func(**kwargs))
        try:
            done, _ = await asyncio.wait({task}, timeout=None if math.isinf(limit) else limit)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise RewardCallError(f"timed out after {limit}s")
        return as_reward(task.result())

    async def score_async(self, rollouts: Sequence[Rollout]) -> list[ScoredRollout]:
        """Score rollouts: isolated calls spread over the worker pool, async ones run concurrently."""
        arguments = [None if r.error is not None else self._arguments(r) for r in rollouts]
        in_workers = self._dispatcher.submit(
            [
                WorkerCall(
                    (i, j),
                    function.shipped,
                    function.name,
                    {name: rollout_arguments[name] for name in function.wants if name != "parser"},
                    self.parser if "parser" in function.wants else None,
                    self._limit(function),
                )
                for i, rollout_arguments in enumerate(arguments)
                if rollout_arguments is not None
                for j, function in enumerate(self.functions)
                if function.shipped is not None
            ]
        )
        results: dict[tuple[int, int], Any] = {}  # per (rollout, function): a reward or an exception
        waiting: dict[tuple[int, int], Awaitable] = {}
        for i, rollout_arguments in enumerate(arguments):
            if rollout_arguments is None:
                continue
            for j, function in enumerate(self.functions):
                call = in_workers.get((i, j))
                if call is not None:
                    waiting[(i, j)] = call
                elif function.is_async:
                    waiting[(i, j)] = self._call_async(function, rollout_arguments)
                else:
                    # A plain call, made now: a coroutine per call would cost more than most reward functions.
                    results[(i, j)] = self._call_inline(function, rollout_arguments)
        done = await asyncio.gather(*waiting.values(), return_exceptions=True)
        results.update(zip(waiting, done, strict=True))
        return [
            self._assemble(rollout, [results[(i, j)] for j in range(len(self.functions))])
            if rollout.error is None
            else ScoredRollout(rollout, 0.0, dict.fromkeys(self.names), {"rollout": rollout.error})
            for i, rollout in enumerate(rollouts)
        ]

    def _assemble(self, rollout: Rollout, results: list[Any]) -> ScoredRollout:
        components: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        total = 0.0
        for function, result in zip(self.functions, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # KeyboardInterrupt and friends are not reward errors
                components[function.name] = None
                errors[function.name] = describe_error(result)
            else:
                components[function.name] = result
                total += function.weight * result
        return ScoredRollout(rollout, total, components, errors)

    def score(self, rollouts: Sequence[Rollout]) -> list[ScoredRollout]:
        """Score rollouts from synchronous code."""
        return asyncio.run(self.score_async(rollouts))
