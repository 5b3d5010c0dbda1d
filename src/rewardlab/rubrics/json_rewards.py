"""Reward factories for structured (JSON) answers.

Each factory returns a reward function that follows the rubric convention (it names the arguments it
needs among ``completion``, ``answer``, ``info``...). The completion is read with :class:`JSONParser`: the
last JSON object outside ``<think>``. A completion without a parsable object scores 0 on every function
here, never an error: an unreadable answer is the model's mistake, and the reward must say so. A reference
(``answer`` or ``info``) that is not what the function expects is the environment's mistake and raises.

Typical weights: the task metric (``id_set_reward(..., "f1")``, ``json_field_accuracy``) as the primary
component, ``json_valid`` and ``json_schema_match`` small, so a perfectly formed wrong answer never
outscores a right one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from rewardlab.rubrics.parsers import JSONParser

RewardFn = Callable[..., float]
SET_METRICS = ("precision", "recall", "f1")
SCHEMA_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}
SCHEMA_KEYWORDS = {"type", "required", "properties", "items", "enum", "minimum", "maximum"}


def _named(func: RewardFn, name: str) -> RewardFn:
    func.__name__ = name
    func.__qualname__ = name
    return func


def json_valid(parser: JSONParser | None = None) -> RewardFn:
    """1.0 when the completion holds a JSON object, else 0.0."""
    parser = parser or JSONParser()

    def reward(completion: str) -> float:
        return 1.0 if parser.parse_answer(completion) is not None else 0.0

    return _named(reward, "json_valid")


# -- a small JSON Schema subset --------------------------------------------------------------------------


def _is_type(value: Any, type_name: str) -> bool:
    if isinstance(value, bool) and type_name in ("number", "integer"):
        return False  # JSON has no "true is 1": a boolean is not a number
    if type_name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, SCHEMA_TYPES[type_name])


def check_schema(schema: dict[str, Any], path: str = "$") -> None:
    """Raise ``ValueError`` if ``schema`` uses anything outside the supported subset.

    Supported: ``type`` (a name or a list of names), ``required``, ``properties``, ``items``, ``enum``,
    ``minimum``, ``maximum``. Refusing the rest is deliberate: a keyword silently ignored would make a
    schema look stricter than the check it gets.
    """
    if not isinstance(schema, dict):
        raise ValueError(f"schema at {path} must be an object, got {type(schema).__name__}")
    unknown = sorted(set(schema) - SCHEMA_KEYWORDS)
    if unknown:
        raise ValueError(
            f"schema keyword '{unknown[0]}' at {path} is not supported ({', '.join(SCHEMA_KEYWORDS)})"
        )
    types = schema.get("type", [])
    for type_name in [types] if isinstance(types, str) else types:
        if type_name not in SCHEMA_TYPES:
            raise ValueError(f"unknown schema type '{type_name}' at {path}")
    for name, sub in schema.get("properties", {}).items():
        check_schema(sub, f"{path}.{name}")
    if "items" in schema:
        check_schema(schema["items"], f"{path}[]")


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``value`` fails ``schema`` (empty when it matches), each naming the JSON path."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, name) for name in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, dict):
        errors += [f"{path}: missing '{key}'" for key in schema.get("required", []) if key not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                errors += schema_errors(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    return errors


def json_schema_match(schema: dict[str, Any], parser: JSONParser | None = None) -> RewardFn:
    """1.0 when the completion's JSON object matches ``schema`` (see :func:`check_schema`), else 0.0."""
    check_schema(schema)
    parser = parser or JSONParser()

    def reward(completion: str) -> float:
        value = parser.parse_answer(completion)
        return 1.0 if value is not None and not schema_errors(value, schema) else 0.0

    return _named(reward, "json_schema_match")


# -- comparing with the reference ------------------------------------------------------------------------


def _reference_object(answer: str) -> dict[str, Any]:
    reference = json.loads(answer)
    if not isinstance(reference, dict):
        raise ValueError(f"the reference answer must be a JSON object, got {type(reference).__name__}")
    return reference


def json_field_accuracy(fields: Sequence[str], parser: JSONParser | None = None) -> RewardFn:
    """The fraction of ``fields`` whose value in the completion's object equals the reference's.

    The reference is ``answer``, a JSON object. Values are compared as decoded JSON, exactly: ``"REJECTED"``
    is not ``"rejected"`` (the prompt names the allowed values) and ``1`` equals ``1.0``.
    """
    fields = list(fields)
    if not fields:
        raise ValueError("json_field_accuracy needs at least one field")
    parser = parser or JSONParser()

    def reward(completion: str, answer: str) -> float:
        reference = _reference_object(answer)
        missing = [f for f in fields if f not in reference]
        if missing:
            raise ValueError(f"the reference answer has no field '{missing[0]}'")
        value = parser.parse_answer(completion)
        if value is None:
            return 0.0
        return sum(f in value and value[f] == reference[f] for f in fields) / len(fields)

    return _named(reward, "json_field_accuracy")


def set_scores(predicted: Sequence[Any], gold: Sequence[Any]) -> dict[str, float]:
    """Precision, recall and F1 of a predicted id list against the gold ids.

    Ids are compared as strings (``7`` matches ``"7"``) and duplicates count once. Items that are not
    strings or integers (a nested list, a boolean, null) are picks that can never be right: each counts as
    a wrong one. The edge cases, chosen so that no empty answer is rewarded for saying nothing:

    * gold empty, nothing picked: precision = recall = F1 = 1 (the right answer is "none");
    * gold empty, something picked: precision 0, recall 1 (nothing was missed), F1 0;
    * gold not empty, nothing picked: precision 0, recall 0, F1 0.
    """
    ids = {str(x) for x in predicted if isinstance(x, str | int) and not isinstance(x, bool)}
    junk = sum(1 for x in predicted if not isinstance(x, str | int) or isinstance(x, bool))
    gold_ids = {str(x) for x in gold}
    if not gold_ids:
        perfect = not ids and not junk
        return {"precision": float(perfect), "recall": 1.0, "f1": float(perfect)}
    hits = len(ids & gold_ids)
    picked = len(ids) + junk
    precision = hits / picked if picked else 0.0
    recall = hits / len(gold_ids)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def id_set_reward(
    field: str, metric: str = "f1", gold_key: str = "gold_ids", parser: JSONParser | None = None
) -> RewardFn:
    """``metric`` ("precision", "recall" or "f1") of the id list in the completion's ``field`` against
    ``info[gold_key]`` (see :func:`set_scores` for the empty cases). 0 when there is no JSON object, the
    field is missing, or it is not a list."""
    if metric not in SET_METRICS:
        raise ValueError(f"unknown set metric '{metric}' (choose: {', '.join(SET_METRICS)})")
    parser = parser or JSONParser()

    def reward(completion: str, info: dict[str, Any]) -> float:
        if gold_key not in info:
            raise KeyError(f"info has no '{gold_key}' (the gold ids)")
        value = parser.parse_answer(completion)
        if value is None or not isinstance(value.get(field), list):
            return 0.0
        return set_scores(value[field], info[gold_key])[metric]

    return _named(reward, f"id_{metric}")


def confidence_calibration(
    fields: Sequence[str], confidence_field: str = "confidence", parser: JSONParser | None = None
) -> RewardFn:
    """1 − Brier score of the stated confidence that the answer is right.

    With ``right`` = 1 when every one of ``fields`` equals the reference (``answer``, a JSON object) and 0
    otherwise, and ``c`` the completion's ``confidence_field`` (a number in [0, 1]), the reward is
    ``1 − (c − right)²``: 1 for a confident right answer or a zero-confidence wrong one, 0 for a fully
    confident wrong answer, 0.75 for "0.5" either way. A missing, non-numeric or out-of-range confidence
    scores 0 (as bad as the worst calibrated answer), so omitting it is never a way out.
    """
    accuracy = json_field_accuracy(fields, parser)
    parser = parser or JSONParser()

    def reward(completion: str, answer: str) -> float:
        value = parser.parse_answer(completion)
        if value is None:
            return 0.0
        confidence = value.get(confidence_field)
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            return 0.0
        if not 0.0 <= confidence <= 1.0:
            return 0.0
        right = 1.0 if accuracy(completion, answer) == 1.0 else 0.0
        return 1.0 - (confidence - right) ** 2

    return _named(reward, "calibration")
