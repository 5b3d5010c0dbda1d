"""Structured outputs: OpenAI's ``response_format``, enforced by grammar-constrained decoding.

A response format (``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` or
``{"type": "json_object"}``) is compiled once per tokenizer into a grammar over token ids (xgrammar). While
sampling, every row has a matcher: before each step it writes the tokens that can continue the row's text
into a bitmask, the mask sets the logits of every other token to -inf, and the sampled token advances the
matcher. End-of-turn tokens are allowed only where the JSON is complete, so the grammar decides when a row
may stop; a row cut at ``max_new_tokens`` ends with ``finish_reason == "length"`` and incomplete JSON.

Why xgrammar: measured against llguidance and outlines-core on the tiny model and SmolLM2-135M's tokenizer
(``benchmarks/bench_grammar_libraries.py``, numbers in BENCHMARKS.md), it computed masks several times faster
per token than llguidance and, unlike outlines-core, enforced every schema it accepted and compiled
``json_object`` in milliseconds; it also ships a CPU kernel that applies a bitmask to the logits.

Two things are adjusted here rather than taken from the library's defaults:

* special tokens (padding, role markers, ``<unk>``...) are not text: decoded without special tokens they
  vanish, so a grammar that let them into a string would return text that is not what it checked. xgrammar
  reads them as their literal names, so the vocabulary handed to it leaves them empty (which it treats as
  special: never allowed), except the end-of-turn tokens, which end a row where the grammar allows it;
* JSON is written with ``json.dumps``'s separators and no other whitespace: free whitespace lets a model
  (an untrained one above all) spend its whole budget on spaces and newlines.

Schemas are checked before anything is sampled: against their JSON Schema meta-schema (``jsonschema``),
then for keywords the grammar cannot enforce (``UNENFORCED``; a schema using them is refused rather than
half enforced), then by compiling. Each failure is a :class:`~rewardlab.errors.ResponseFormatError` of one
line naming the place.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import torch

from rewardlab.errors import ResponseFormatError

# Keywords xgrammar compiles without enforcing (checked: with each, a document violating it was accepted;
# minContains and maxContains only qualify contains, "then" and "else" only "if").
UNENFORCED = {
    "not": "not",
    "allOf": "allOf",
    "if": "if/then/else",
    "then": "if/then/else",
    "else": "if/then/else",
    "uniqueItems": "uniqueItems",
    "contains": "contains",
    "minContains": "minContains",
    "maxContains": "maxContains",
    "dependentRequired": "dependentRequired",
    "dependentSchemas": "dependentSchemas",
    "dependencies": "dependencies",
}
# Keys whose values map names to subschemas, and keys whose values are data, not schemas.
_NAMED_SCHEMAS = {"properties", "patternProperties", "$defs", "definitions"}
_DATA = {"enum", "const", "default", "examples", "required", "title", "description", "$comment"}
# "[12:00:00] /path/file.cc:123: " in front of xgrammar's messages.
_LOG_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")
ANY_OBJECT = {"type": "object"}


def parse_response_format(value: Any) -> dict | None:
    """OpenAI's ``response_format``, checked and normalised: ``None`` for plain text (absent, ``None`` or
    ``{"type": "text"}``), else ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema":
    {"name", "schema", ...}}``. The schema is checked against its meta-schema and for keywords that
    constrained decoding cannot enforce; raises :class:`ResponseFormatError`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ResponseFormatError(
            'must be an object such as {"type": "json_schema", "json_schema": {"name": ..., "schema": ...}}'
        )
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise ResponseFormatError(
            f"type: must be one of text, json_object, json_schema, got {json.dumps(kind)}"
        )
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise ResponseFormatError('json_schema: must be an object with the "schema" to follow')
    if "name" in spec and not isinstance(spec["name"], str):
        raise ResponseFormatError("json_schema.name: must be a string")
    if "strict" in spec and spec["strict"] is not None and not isinstance(spec["strict"], bool):
        raise ResponseFormatError("json_schema.strict: must be true or false")
    if "schema" not in spec:
        raise ResponseFormatError("json_schema.schema: required (the JSON Schema the output must follow)")
    schema = spec["schema"]
    if not isinstance(schema, dict):
        raise ResponseFormatError(
            f"json_schema.schema: must be a JSON Schema object, got {json.dumps(schema)}"
        )
    check_schema(schema)
    return {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not None}}


def schema_of(response_format: dict) -> dict:
    """The JSON Schema a parsed response format constrains to (``json_object``: any object)."""
    if response_format["type"] == "json_object":
        return ANY_OBJECT
    return response_format["json_schema"]["schema"]


def check_schema(schema: dict) -> None:
    """Raise :class:`ResponseFormatError` for a schema that is not valid JSON Schema, or that uses a
    keyword constrained decoding would silently leave unenforced."""
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        where = _path(error.path)
        raise ResponseFormatError(
            f"json_schema.schema: {error.message}{f' (at {where})' if where else ''}"
        ) from None
    for keyword, where in _keywords(schema, ()):
        raise ResponseFormatError(
            f"json_schema.schema: {UNENFORCED[keyword]}{f' (at {where})' if where else ''} cannot be "
            "enforced while decoding; leave it out of the schema (a reward can still check it)"
        )


def _keywords(schema: Any, path: tuple) -> list[tuple[str, str]]:
    """(keyword, location) of every keyword in ``UNENFORCED`` used as a keyword in ``schema``."""
    found: list[tuple[str, str]] = []
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            found += _keywords(item, (*path, index))
        return found
    if not isinstance(schema, dict):
        return found
    for key, value in schema.items():
        if key in UNENFORCED:
            found.append((key, _path(path)))
        elif key in _NAMED_SCHEMAS and isinstance(value, dict):
            for name, subschema in value.items():
                found += _keywords(subschema, (*path, key, name))
        elif key not in _DATA:
            found += _keywords(value, (*path, key))
    return found


def _path(parts) -> str:
    return ".".join(str(part) for part in parts)


class Grammars:
    """Response formats compiled for one tokenizer (thread-safe: a server compiles while it generates).

    xgrammar's view of the vocabulary is built on first use (a fraction of a second for a 50k vocabulary);
    each distinct schema is compiled once and kept by xgrammar's cache.
    """

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_ids = sorted(stop_ids)
        self._compiler = None
        self._lock = threading.Lock()

    @property
    def compiler(self):
        with self._lock:
            if self._compiler is None:
                import xgrammar

                info = tokenizer_info(self.tokenizer, self.vocab_size, self.stop_ids)
                self._compiler = xgrammar.GrammarCompiler(info, max_threads=1)
            return self._compiler

    def compile(self, response_format: dict):
        """The compiled grammar of a parsed response format; a schema the grammar compiler refuses is a
        :class:`ResponseFormatError` naming its reason."""
        schema = json.dumps(schema_of(response_format))
        try:
            return self.compiler.compile_json_schema(schema, any_whitespace=False)
        except RuntimeError as error:
            reason = _LOG_PREFIX.sub("", str(error).strip().splitlines()[0])
            raise ResponseFormatError(
                f"json_schema.schema: cannot be compiled to a grammar: {reason}"
            ) from None

    def constraint(self, response_format: dict, rows: int) -> Constraint:
        return Constraint(self.compile(response_format), rows, self.vocab_size)


def tokenizer_info(tokenizer, vocab_size: int, stop_ids: list[int]):
    """xgrammar's ``TokenizerInfo`` with every special token empty (never allowed), the stop ids ending."""
    import xgrammar

    detected = xgrammar.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=vocab_size, stop_token_ids=stop_ids
    )
    special = set(tokenizer.all_special_ids)
    special |= {index for index, token in tokenizer.added_tokens_decoder.items() if token.special}
    vocabulary = [""] * vocab_size
    for token, index in tokenizer.get_vocab().items():
        if index < vocab_size and index not in special:
            vocabulary[index] = token
    return xgrammar.TokenizerInfo(
        vocabulary,
        detected.vocab_type,
        vocab_size=vocab_size,
        stop_token_ids=stop_ids,
        add_prefix_space=detected.add_prefix_space,
    )


class Constraint:
    """The matchers of one batch: masks the logits of the rows still generating, then advances them."""

    def __init__(self, compiled, rows: int, vocab_size: int):
        import xgrammar

        self._xgrammar = xgrammar
        self.matchers = [xgrammar.GrammarMatcher(compiled) for _ in range(rows)]
        self.vocab_size = vocab_size
        self.bitmask = xgrammar.allocate_token_bitmask(rows, vocab_size)
        self._bits = self.bitmask.numpy()  # the same memory, for a cheap check of every row
        self._batch = xgrammar.BatchGrammarMatcher(max_threads=1)

    def mask(self, logits: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, V) as float32 with every token the grammar does not allow at -inf, in the rows
        not ``finished`` (finished rows are left as they are: their token is replaced by padding)."""
        logits = logits.float()
        live = [row for row, done in enumerate(finished.tolist()) if not done]
        if not live:
            return logits
        matchers = [self.matchers[row] for row in live]
        self._batch.batch_fill_next_token_bitmask(matchers, self.bitmask, live)
        # Rows that finished keep their last mask, which allowed their last token: an empty row is live.
        if not self._bits.any(axis=1).all():
            raise ResponseFormatError(
                "json_schema.schema: needs text this tokenizer cannot write (no token can continue the "
                "JSON: a character outside its vocabulary in an enum, a const or a pattern?)"
            )
        bitmask = self.bitmask if logits.device.type == "cpu" else self.bitmask.to(logits.device)
        self._xgrammar.apply_token_bitmask_inplace(logits, bitmask, vocab_size=self.vocab_size, indices=live)
        if logits.shape[-1] > self.vocab_size:  # the model's rows past the tokenizer's vocabulary
            logits[live, self.vocab_size :] = float("-inf")
        return logits

    def advance(self, tokens: list[int], finished: list[bool]) -> None:
        """Hand each live row's sampled token to its matcher (the mask allowed it, so it is accepted)."""
        live = [row for row, done in enumerate(finished) if not done]
        accepted = self._xgrammar.BatchGrammarMatcher.batch_accept_token(
            [self.matchers[row] for row in live], [tokens[row] for row in live]
        )
        if not all(accepted):
            token = tokens[live[accepted.index(False)]]
            raise RuntimeError(f"the grammar refused token {token}, which its own mask allowed")
