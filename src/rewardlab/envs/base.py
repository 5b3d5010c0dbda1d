"""Environments: a dataset, a rubric and (for games and tools) the turns between model and world.

``MultiTurnEnv`` is the general case, and its contract is three methods:

* :meth:`~Environment.initial_state` (optional): set up one episode from its example, as a dict;
* :meth:`MultiTurnEnv.env_response` (required): answer the model's last message, updating that state;
* :meth:`MultiTurnEnv.is_completed` (required): whether the episode is over.

``SingleTurnEnv`` is one model turn. Both go through the same :meth:`Environment.rollout` loop, which is
what ``eval``, ``train`` and ``compare`` all call; docs/environments.md walks through writing one.
"""

from __future__ import annotations

import copy
import random
import time
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from rewardlab.envs.dataset import load_examples
from rewardlab.errors import EnvironmentLoadError, RewardlabError
from rewardlab.rubrics.parsers import Parser
from rewardlab.rubrics.rubric import Rubric
from rewardlab.sampling.base import Prompt, Sampler, SamplingParams, derived_seed
from rewardlab.types import Example, Messages, Rollout

Policy = Callable[[Messages, dict[str, Any], Example, random.Random], str]
PROMPT_STYLES = ("terse", "chat")


class Environment:
    """A task: examples to prompt with, and a rubric to score what comes back.

    ``dataset`` is the training split, ``eval_dataset`` the held-out split; each may be a list of rows,
    a JSONL path or a ``datasets.Dataset``.
    """

    name: str = "environment"
    description: str = ""
    # How prompts are worded: "terse" for the character-level tiny models (short, no instructions they
    # could not read), "chat" for instruction-tuned models with a chat template. Built-in environments take
    # it as ``prompt_style``; callers pick it from the model (see ``envs.registry.load_environment_for``).
    prompt_style: str = "terse"
    # The default token budget of one model turn, by prompt style: a character model spends a token per
    # character of a short answer, a subword model about one per word piece of an answer with some slack.
    max_new_tokens_by_style: dict[str, int] = {"terse": 16, "chat": 256}

    def __init__(
        self,
        dataset: Any = None,
        eval_dataset: Any = None,
        system_prompt: str | None = None,
        rubric: Rubric | None = None,
        parser: Parser | None = None,
        max_turns: int = 1,
        name: str | None = None,
        description: str | None = None,
        prompt_style: str | None = None,
    ):
        self.system_prompt = system_prompt
        self.parser = parser or (rubric.parser if rubric else Parser())
        self.rubric = rubric or Rubric(parser=self.parser)
        if rubric is not None and parser is not None:
            self.rubric.parser = parser
        self.max_turns = max_turns
        self.train_examples = load_examples(dataset, system_prompt)
        self.eval_examples = load_examples(eval_dataset, system_prompt)
        if prompt_style is not None:
            if prompt_style not in PROMPT_STYLES:
                known = ", ".join(PROMPT_STYLES)
                raise ValueError(f"prompt_style must be one of {known}, got '{prompt_style}'")
            self.prompt_style = prompt_style
        if name:
            self.name = name
        if description:
            self.description = description

    @property
    def default_max_new_tokens(self) -> int:
        """Tokens per model turn when the sampling config leaves ``max_new_tokens`` unset."""
        styles = self.max_new_tokens_by_style
        return styles.get(self.prompt_style, max(styles.values()))

    # -- data -----------------------------------------------------------------------------------

    def examples(self, split: str = "train", n: int | None = None, seed: int = 0) -> list[Example]:
        """``n`` examples of ``split`` ("train" or "eval"), shuffled by ``seed`` when ``n`` is given."""
        if split not in ("train", "eval"):
            raise RewardlabError(f"unknown split '{split}' (use 'train' or 'eval')")
        pool = self.train_examples if split == "train" else self.eval_examples
        if not pool:
            raise RewardlabError(f"environment '{self.name}' has no {split} examples")
        if n is None or n >= len(pool):
            return list(pool)
        return random.Random(seed).sample(pool, n)

    def fresh_examples(self, n: int, seed: int) -> list[Example]:
        """``n`` new held-out-side examples drawn with another ``seed``, for procedural environments.

        A sceptic's second look: numbers on data nobody has seen, not even while choosing hyperparameters.
        Never overlaps the train split.
        """
        raise RewardlabError(f"environment '{self.name}' cannot generate fresh examples")

    def adversarial_examples(self, n: int, seed: int) -> list[Example]:
        """``n`` examples built to trip a model: decoys, fake or false-positive records, the hard cases."""
        raise RewardlabError(f"environment '{self.name}' defines no adversarial set")

    def demonstration(self, example: Example, rng: random.Random | None = None) -> str:
        """The assistant reply used to prime a model with SFT: the answer in the parser's format.

        ``rng`` lets a stochastic teacher draw a fresh demonstration each time it is asked.
        """
        return self.parser.format_answer(example.answer)

    def policies(self) -> dict[str, Policy]:
        """Scripted players usable wherever a model is (``--model scripted:oracle``).

        A policy maps ``(messages, state, example, rng)`` to the next assistant message. Built-in
        environments ship an ``oracle`` (near the maximum reward) and a ``random`` one; together they show
        the rubric measures what it claims.
        """
        return {}

    # -- turns ----------------------------------------------------------------------------------

    def initial_state(self, example: Example) -> dict[str, Any]:
        """Set up one episode of ``example``: the dict every later call of that episode gets as ``state``.

        Put here whatever the game needs and the prompt does not carry (a maze's walls, a secret word, a
        move counter), taken from ``example.info``. Each episode gets its own dict, ``env_response`` may
        change it as the episode goes, and reward functions that take ``state`` read it at the end, with
        ``truncated`` and ``stop_reason`` added.
        """
        return {}

    def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        """The environment's reply to the model's last message (multi-turn environments override)."""
        return []

    def is_completed(self, messages: Messages, state: dict[str, Any]) -> bool:
        """Whether the episode is over after the model's last message."""
        return True

    def rollout(
        self,
        sampler: Sampler,
        examples: Sequence[Example],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[Rollout]:
        """Run ``params.n`` episodes per example, all turns batched across episodes.

        ``seeds`` (one per example) give each episode a random stream of its own: turn ``t`` of episode ``k``
        of example ``i`` is sampled with ``Prompt.seed = derived_seed(seeds[i], k, t)``, so a group draws
        the same completions whatever else is sampled beside it (a data-parallel trainer's shard).

        When the sampler exposes a ``renderer`` (a local model, or a server sampled by token ids), token ids
        are tracked through every turn: generated ids are kept as they are and only the environment's replies
        are tokenized. With ``params.logprobs`` each rollout also keeps the sampler's log-prob of every token.

        The environment answers every model turn, the one at ``max_turns`` too. Each episode's ``state``
        ends with ``truncated`` (a model turn hit ``max_new_tokens``; such a turn is answered, then ends
        the episode) and ``stop_reason``: "completed", "truncated", "max_turns" or "error", for
        reward functions that take ``state``.
        """
        renderer = getattr(sampler, "renderer", None)
        rollouts: list[Rollout] = []
        histories: list[Messages] = []
        ids: list[list[int] | None] = []
        for example in examples:
            prompt_ids = renderer.prompt_ids(example.prompt) if renderer else None
            for k in range(params.n):
                rollouts.append(
                    Rollout(
                        example,
                        k,
                        [],
                        state=self.initial_state(example),
                        prompt_ids=prompt_ids,
                        completion_ids=[] if renderer else None,
                        completion_mask=[] if renderer else None,
                        completion_logprobs=[] if renderer and params.logprobs else None,
                    )
                )
                histories.append(copy.deepcopy(example.prompt))
                ids.append(list(prompt_ids) if prompt_ids is not None else None)
        started = time.perf_counter()
        active = list(range(len(rollouts)))
        turn_params = copy.copy(params)
        turn_params.n = 1

        def episode_seed(i: int, turn: int) -> int | None:
            return None if seeds is None else derived_seed(seeds[i // params.n], i % params.n, turn)

        for turn in range(self.max_turns):
            if not active:
                break
            prompts = [
                Prompt(histories[i], ids[i], rollouts[i].state, rollouts[i].example, episode_seed(i, turn))
                for i in active
            ]
            generations = sampler.generate(prompts, turn_params)
            still_active = []
            for i, [generation] in zip(active, generations, strict=True):
                rollout = rollouts[i]
                reply = {"role": "assistant", "content": generation.text}
                rollout.completion.append(reply)
                histories[i].append(reply)
                rollout.num_turns = turn + 1
                rollout.latency_s += generation.latency_s
                rollout.turn_tokens.append(len(generation.token_ids or ()))
                if renderer:
                    rollout.completion_ids.extend(generation.token_ids)
                    rollout.completion_mask.extend([1] * len(generation.token_ids))
                    if rollout.completion_logprobs is not None:  # a sampler without them: none at all
                        if generation.logprobs is None:
                            rollout.completion_logprobs = None
                        else:
                            rollout.completion_logprobs.extend(generation.logprobs)
                    ids[i].extend(generation.token_ids)
                cut_off = generation.finish_reason == "length"
                rollout.truncated = rollout.truncated or cut_off
                rollout.state["truncated"] = rollout.truncated
                try:
                    done = self._answer(histories, ids, i, rollout, generation.token_ids, renderer)
                except Exception as error:  # a broken environment fails this episode, not the run
                    rollout.error = f"environment raised {type(error).__name__}: {error}"
                    rollout.state["stop_reason"] = "error"
                    continue
                if done:
                    rollout.state["stop_reason"] = "completed"
                elif cut_off:
                    # A turn cut off at max_new_tokens ends the episode: the model ran out of room
                    # mid-thought, and the rubric sees that in state["truncated"] and rollout.truncated.
                    rollout.state["stop_reason"] = "truncated"
                elif turn + 1 == self.max_turns:
                    rollout.state["stop_reason"] = "max_turns"
                else:
                    still_active.append(i)
            active = still_active
        elapsed = time.perf_counter() - started
        for rollout in rollouts:
            rollout.latency_s = rollout.latency_s or elapsed / max(len(rollouts), 1)
        return rollouts

    def _answer(self, histories, ids, i: int, rollout: Rollout, generated_ids, renderer) -> bool:
        """Let the environment see the model's turn (every turn, the last and a cut-off one included, so
        a move judged in ``env_response`` always counts); returns whether the episode is over."""
        if self.is_completed(histories[i], rollout.state):
            return True
        response = self.env_response(histories[i], rollout.state)
        before = list(histories[i])
        histories[i].extend(response)
        rollout.completion.extend(response)
        if renderer and response:
            delta = renderer.continuation_ids(before, generated_ids, histories[i])
            rollout.completion_ids.extend(delta)
            rollout.completion_mask.extend([0] * len(delta))
            if rollout.completion_logprobs is not None:
                rollout.completion_logprobs.extend([0.0] * len(delta))
            ids[i].extend(delta)
        return self.is_completed(histories[i], rollout.state)


class SingleTurnEnv(Environment):
    """One prompt, one reply, one score."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["max_turns"] = 1
        super().__init__(*args, **kwargs)


class MultiTurnEnv(Environment, metaclass=ABCMeta):
    """Model and environment take turns until :meth:`is_completed` or ``max_turns``.

    Subclasses implement :meth:`env_response` and :meth:`is_completed`, and usually
    :meth:`~Environment.initial_state`. The loop calls, after every model turn::

        is_completed(messages, state)      # already over? (the model's answer may end it)
        env_response(messages, state)      # if not: the environment's reply, appended to the history
        is_completed(messages, state)      # over now?

    ``messages`` is the whole conversation so far, prompt included, ending with the model's turn.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        # Said as a user error, not Python's TypeError: this is the first thing a new environment meets.
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            raise EnvironmentLoadError(
                f"{cls.__name__} must define {' and '.join(f'{name}(messages, state)' for name in missing)} "
                "(see MultiTurnEnv)"
            )
        return super().__new__(cls)

    def __init__(self, *args: Any, max_turns: int = 8, **kwargs: Any):
        super().__init__(*args, max_turns=max_turns, **kwargs)

    @abstractmethod
    def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        """The environment's reply to the model's last message (``messages[-1]``): a list of messages,
        usually one ``{"role": "user", ...}`` (or ``"tool"``), possibly empty. Update ``state`` here."""

    @abstractmethod
    def is_completed(self, messages: Messages, state: dict[str, Any]) -> bool:
        """Whether the episode is over; ``max_turns`` ends it regardless."""
