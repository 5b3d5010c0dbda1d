"""A rubric is a list of weighted reward functions.

A reward function names what it needs and gets exactly that::

    def correct(completion, answer, parser):
        return 1.0 if parser.parse_answer(completion) == answer else 0.0

Available names: ``completion`` (the model's last reply, a string), ``completion_messages`` (every
message after the prompt), ``prompt`` (the prompt messages), ``answer``, ``info``, ``state``, ``parser``
and ``example``; a function taking ``**kwargs`` receives them all. Functions may be ``async``. The total
reward is the weighted sum; every component is kept, and a function that raises marks its component as
errored on that rollout instead of scoring it 0.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rewardlab.errors import RewardlabError
from rewardlab.rubrics.parsers import Parser
from rewardlab.types import Rollout, ScoredRollout

REWARD_ARGUMENTS = (
    "completion",
    "completion_messages",
    "prompt",
    "answer",
    "info",
    "state",
    "parser",
    "example",
)


@dataclass
class RewardFunction:
    func: Callable[..., Any]
    weight: float
    name: str
    wants: tuple[str, ...]  # the argument names it asked for; all of them when it takes **kwargs
    is_async: bool


def _inspect(func: Callable[..., Any], name: str) -> tuple[tuple[str, ...], bool]:
    signature = inspect.signature(func)
    wants: list[str] = []
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return REWARD_ARGUMENTS, inspect.iscoroutinefunction(func)
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
    return tuple(wants), inspect.iscoroutinefunction(func)


class Rubric:
    """Weighted reward functions plus the parser they share.

    ``primary`` names the correctness component (the first function by default): pass@k and the
    comparison's "solved" counts are read from it.
    """

    def __init__(
        self,
        funcs: Sequence[Callable[..., Any]] = (),
        weights: Sequence[float] | None = None,
        parser: Parser | None = None,
        names: Sequence[str] | None = None,
        primary: str | None = None,
    ):
        self.parser = parser or Parser()
        self.functions: list[RewardFunction] = []
        weights = list(weights) if weights is not None else [1.0] * len(funcs)
        if len(weights) != len(funcs):
            raise RewardlabError(f"rubric has {len(funcs)} reward functions but {len(weights)} weights")
        names = list(names) if names is not None else [None] * len(funcs)
        for func, weight, name in zip(funcs, weights, names, strict=True):
            self.add(func, weight, name)
        self._primary = primary

    def add(self, func: Callable[..., Any], weight: float = 1.0, name: str | None = None) -> Rubric:
        name = name or getattr(func, "__name__", None) or f"reward_{len(self.functions)}"
        if any(f.name == name for f in self.functions):
            raise RewardlabError(f"rubric already has a reward function named '{name}'")
        if not math.isfinite(weight):
            raise RewardlabError(f"reward function '{name}' has a non-finite weight {weight}")
        wants, is_async = _inspect(func, name)
        self.functions.append(RewardFunction(func, float(weight), name, wants, is_async))
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
        }

    async def _call(self, function: RewardFunction, arguments: dict[str, Any]) -> float:
        kwargs = {name: arguments[name] for name in function.wants}
        if function.is_async:
            value = await function.func(**kwargs)
        else:
            value = function.func(**kwargs)
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, int | float):
            raise TypeError(f"returned {type(value).__name__}, expected a number")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"returned {value}")
        return value

    async def score_rollout_async(self, rollout: Rollout) -> ScoredRollout:
        if rollout.error is not None:
            return ScoredRollout(
                rollout, 0.0, {f.name: None for f in self.functions}, {"rollout": rollout.error}
            )
        arguments = self._arguments(rollout)
        results = await asyncio.gather(
            *(self._call(f, arguments) for f in self.functions), return_exceptions=True
        )
        components: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        total = 0.0
        for function, result in zip(self.functions, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # KeyboardInterrupt and friends are not reward errors
                components[function.name] = None
                errors[function.name] = f"{type(result).__name__}: {result}"
            else:
                components[function.name] = result
                total += function.weight * result
        return ScoredRollout(rollout, total, components, errors)

    async def score_async(self, rollouts: Sequence[Rollout]) -> list[ScoredRollout]:
        return list(await asyncio.gather(*(self.score_rollout_async(r) for r in rollouts)))

    def score(self, rollouts: Sequence[Rollout]) -> list[ScoredRollout]:
        """Score rollouts; async reward functions run concurrently."""
        return asyncio.run(self.score_async(rollouts))
