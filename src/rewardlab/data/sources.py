"""What ``rewardlab data generate`` is given: a generator function and a row schema, each found by a spec.

A spec is ``path.py:name`` (a file) or ``module:name`` (importable); a schema may also be a JSON Schema file
(``rows.schema.json``). A schema checks one row and says why it fails in a short reason (grouped in the
summary) and a full message (kept with the rejected row); it also lists the values a field may take, which
``--balance`` shares the rows among.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from rewardlab.errors import RewardlabError
from rewardlab.user_code import import_file


def _import_file(path: Path, what: str):
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return import_file(path, f"rewardlab_user_{what}_{path.stem}_{digest}", RewardlabError, what)


def load_object(spec: str, what: str) -> Any:
    """The object a ``path.py:name`` or ``module:name`` spec names, or a one-line error naming ``what``."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise RewardlabError(f"{what} '{spec}' must look like path.py:name or module:name")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise RewardlabError(f"{what} file not found: {where}")
        module = _import_file(path, what)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as error:
            raise RewardlabError(
                f"{what} module '{where}' failed to import: {type(error).__name__}: {error}"
            ) from None
    if not hasattr(module, name):
        raise RewardlabError(f"{what} '{spec}': {where} has no '{name}'")
    return getattr(module, name)


def load_generator(spec: str):
    generator = load_object(spec, "generator")
    if not callable(generator):
        raise RewardlabError(f"generator '{spec}' is a {type(generator).__name__}, not a function")
    return generator


@dataclass
class Rejection:
    reason: str  # short, for counting: "schema: answer (pattern)"
    message: str  # the whole story, kept beside the rejected row


class RowSchema:
    """One row's check, against a JSON Schema (jsonschema) or a pydantic model."""

    def __init__(self, spec: str, json_schema: dict, model: type[BaseModel] | None = None):
        self.spec = spec
        self.json_schema = json_schema
        self.model = model
        if model is None:
            import jsonschema

            self._validator = jsonschema.validators.validator_for(json_schema)(json_schema)

    def check(self, row: Any) -> Rejection | None:
        if self.model is not None:
            try:
                self.model.model_validate(row)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "<row>"
                return Rejection(f"schema: {where} ({first['type']})", f"{where}: {first['msg']}")
            return None
        import jsonschema

        error = jsonschema.exceptions.best_match(self._validator.iter_errors(row))
        if error is None:
            return None
        where = ".".join(str(part) for part in error.absolute_path) or "<row>"
        return Rejection(f"schema: {where} ({error.validator})", f"{where}: {error.message}")

    def values(self, field: str) -> list[Any]:
        """The values the schema allows ``field`` (dotted: ``info.kind``), for ``--balance``."""
        node: Any = self.json_schema
        for part in field.split("."):
            node = self._resolved(node).get("properties", {}).get(part)
            if node is None:
                raise RewardlabError(f"--balance {field}: schema {self.spec} has no field '{field}'")
        node = self._resolved(node)
        if "enum" in node:
            return list(node["enum"])
        if "const" in node:
            return [node["const"]]
        if node.get("type") == "boolean":
            return [False, True]
        raise RewardlabError(
            f"--balance {field}: schema {self.spec} lists no values for it (an enum, a Literal or a bool)"
        )

    def _resolved(self, node: dict) -> dict:
        return resolved(self.json_schema, node)


def field_value(row: Any, dotted: str) -> Any:
    """The value of a dotted field (``info.kind``) of a row, or None where the row has none."""
    for part in dotted.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return row


def resolved(root: dict, node: Any) -> dict:
    """``node`` of the schema ``root``, its local references followed (pydantic puts an Enum or a nested
    model under ``$defs`` and refers to it)."""
    while isinstance(node, dict) and "$ref" in node and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node if isinstance(node, dict) else {}


def load_schema(spec: str) -> RowSchema:
    if spec.endswith(".json"):
        path = Path(spec)
        if not path.is_file():
            raise RewardlabError(f"schema file not found: {spec}")
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RewardlabError(f"schema {spec}: not valid JSON ({error})") from None
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.exceptions.SchemaError as error:
            where = "/".join(str(part) for part in error.absolute_path) or "top level"
            raise RewardlabError(
                f"schema {spec}: not a valid JSON Schema at {where}: {error.message}"
            ) from None
        return RowSchema(spec, schema)
    model = load_object(spec, "schema")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise RewardlabError(f"schema '{spec}' is neither a pydantic model nor a .json JSON Schema file")
    return RowSchema(spec, model.model_json_schema(), model)


def fingerprint(spec: str) -> str | None:
    """A hash of the file a spec names (a changed generator makes different rows), or None for a module."""
    path = Path(spec.rpartition(":")[0] if not spec.endswith(".json") else spec)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
