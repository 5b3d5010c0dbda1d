"""Rows written by a model behind an OpenAI-compatible endpoint: ``data generate --template``.

The template is a text file, filled for every draw and sent as the user's message. ``{level}`` is the row's
level; ``{field}`` (dotted: ``{info.kind}``) names a schema field with listed values (an enum, a Literal, a
bool): the draw picks one of them with its own random generator, and the schema sent along as
``response_format`` pins the field to it (a ``const``). So a server that decodes under the schema
(``rewardlab serve``, vLLM) returns a row of that class. The ``--balance`` field, when the template names
it, is not drawn but dealt in turn (the ``i``-th row of a level gets value ``i mod k``, in the schema's
order, at every attempt), so the classes fill their equal shares and no request is spent on a class already
full. Any other placeholder is refused before anything is sent. Each draw also sends a seed drawn from its
generator: a server that honours seeds answers a rerun alike.

Draws are requested ahead, ``concurrency`` at a time (:meth:`TemplateGenerator.prefetch`); a row's later
attempts (after a rejection) are sent one by one. A reply that is not JSON is a rejected draw, counted like a
schema failure; an endpoint that refuses or keeps failing (after the sampler's retries) stops the command in
one line, with every row already written kept.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

from rewardlab.data.sources import Rejection, RowSchema, resolved
from rewardlab.errors import RewardlabError
from rewardlab.sampling.base import Prompt, SamplingParams

PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)\}")


class DrawRejected(Exception):
    """A draw the generator itself refuses (a reply that is not JSON): a counted rejection, not a crash."""

    def __init__(self, rejection: Rejection):
        super().__init__(rejection.message)
        self.rejection = rejection


def draw_key(rng: random.Random) -> int:
    """Which draw a fresh generator belongs to (its state), so a prefetched reply finds its draw."""
    return hash(rng.getstate())


def pinned(schema: dict, values: dict[str, Any]) -> dict:
    """``schema`` with each dotted field of ``values`` fixed to its value (``const``) and required."""
    schema = json.loads(json.dumps(schema))  # a copy to edit
    for dotted, value in values.items():
        node = schema
        *parents, name = dotted.split(".")
        for part in parents:
            node = resolved(schema, node)["properties"][part]
        node = resolved(schema, node)
        node["properties"][name] = {"const": value}
        node["required"] = sorted({*node.get("required", []), name})
    return schema


class TemplateGenerator:
    """``fn(rng, level) -> dict`` like a generator function, answered by a model (see the module)."""

    def __init__(self, cfg, schema: RowSchema, sampler=None):
        path = Path(cfg.template)
        if not path.is_file():
            raise RewardlabError(f"template file not found: {cfg.template}")
        self.text = path.read_text(encoding="utf-8")
        self.schema = schema
        self.fields = sorted({name for name in PLACEHOLDER.findall(self.text) if name != "level"})
        self.values = {}
        for name in self.fields:
            try:
                self.values[name] = schema.values(name)
            except RewardlabError:
                raise RewardlabError(
                    f"template {cfg.template}: {{{name}}} is not a field of schema {schema.spec} with listed "
                    "values (an enum, a Literal or a bool); the template may use {level} and such fields"
                ) from None
        self.dealt = cfg.balance if cfg.balance in self.fields else None  # dealt in turn, not drawn
        self.params = SamplingParams(temperature=cfg.temperature, max_new_tokens=cfg.max_tokens)
        self.constrained = cfg.constrained
        self.provenance = {
            "template": cfg.template,
            "prompt_version": hashlib.sha256(self.text.encode()).hexdigest()[:12],
            "model": cfg.model,
            "endpoint": cfg.base_url,
        }
        if sampler is None:
            from rewardlab.sampling.openai_compat import OpenAISampler

            sampler = OpenAISampler(
                cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, max_concurrency=cfg.concurrency
            )
        self.sampler = sampler
        self._ready: dict[int, str] = {}  # draw_key -> the reply's text

    def request(self, rng: random.Random, level: int | None, turn: int) -> tuple[Prompt, SamplingParams]:
        """The message and parameters of one draw: everything drawn from ``rng``, but the dealt field."""
        values = {name: rng.choice(self.values[name]) for name in self.fields}
        if self.dealt is not None:
            choices = self.values[self.dealt]
            values[self.dealt] = choices[turn % len(choices)]

        def fill(match: re.Match) -> str:
            name = match[1]
            value = level if name == "level" else values[name]
            return value if isinstance(value, str) else json.dumps(value)

        schema = pinned(self.schema.json_schema, values)
        response_format = {"type": "json_schema", "json_schema": {"name": "row", "schema": schema}}
        params = SamplingParams(
            temperature=self.params.temperature,
            max_new_tokens=self.params.max_new_tokens,
            seed=rng.randrange(2**31),
            response_format=response_format if self.constrained else None,
        )
        return Prompt([{"role": "user", "content": PLACEHOLDER.sub(fill, self.text)}]), params

    def prefetch(self, draws: list[tuple[random.Random, int | None, int]]) -> None:
        """Send draws ``(rng, level, turn)`` together; their replies wait for the calls that take them."""
        keys = [draw_key(rng) for rng, _, _ in draws]
        requests = [self.request(rng, level, turn) for rng, level, turn in draws]
        for key, generations in zip(keys, self.sampler.generate_each(requests), strict=True):
            self._ready[key] = generations[0].text

    def __call__(self, rng: random.Random, level: int | None, turn: int = 0) -> dict:
        """One draw's row; ``turn`` is the row's place in its level (see the module)."""
        key = draw_key(rng)
        text = self._ready.pop(key, None)
        if text is None:
            text = self.sampler.generate_each([self.request(rng, level, turn)])[0][0].text
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise DrawRejected(
                Rejection("endpoint: reply not JSON", f"{error.msg} at char {error.pos}: {text[:200]!r}")
            ) from None

    @property
    def stats(self):
        return self.sampler.stats

    def close(self) -> None:
        self.sampler.close()
