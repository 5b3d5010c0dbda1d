"""Turning user data into :class:`~rewardlab.types.Example` objects.

Rows look like ``{"prompt" | "question": ..., "answer": ..., "info": {...}, "id": ...}`` and may come
from a list of dicts, a JSONL/JSON file or a ``datasets.Dataset``. ``prompt`` is either the user's text
or a list of chat messages. Every problem is reported with the row (and file line) it was found on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rewardlab.errors import DatasetError
from rewardlab.types import Example, Messages

ROLES = {"system", "user", "assistant", "tool"}


def example_id(prompt: Messages, answer: str) -> str:
    """A stable id from the content, so the same problem has the same id in every run."""
    blob = json.dumps([prompt, answer], sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _messages(value: Any, where: str, system_prompt: str | None) -> Messages:
    if isinstance(value, str):
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, list) and value:
        messages = []
        for i, message in enumerate(value):
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                raise DatasetError(f"{where}: prompt message {i} needs 'role' and 'content'")
            if message["role"] not in ROLES:
                raise DatasetError(f"{where}: prompt message {i} has unknown role '{message['role']}'")
            messages.append({"role": str(message["role"]), "content": str(message["content"])})
    else:
        raise DatasetError(f"{where}: 'prompt' must be a string or a non-empty list of messages")
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def row_to_example(
    row: Mapping[str, Any], where: str, system_prompt: str | None = None, require_answer: bool = False
) -> Example:
    if not isinstance(row, Mapping):
        raise DatasetError(
            f"{where}: expected an object with 'prompt' and 'answer', got {type(row).__name__}"
        )
    if row.get("prompt") not in (None, ""):
        prompt = _messages(row["prompt"], where, system_prompt)
    elif row.get("question") not in (None, ""):
        prompt = _messages(str(row["question"]), where, system_prompt)
    else:
        raise DatasetError(f"{where}: row has no 'prompt' or 'question'")
    if "answer" not in row or row["answer"] is None:
        if require_answer:
            raise DatasetError(f"{where}: row has no 'answer'")
        answer = ""
    else:
        answer = row["answer"] if isinstance(row["answer"], str) else json.dumps(row["answer"])
    info = row.get("info") or {}
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where}: 'info' is a string but not JSON ({error.msg})") from None
    if not isinstance(info, Mapping):
        raise DatasetError(f"{where}: 'info' must be an object")
    identifier = str(row["id"]) if row.get("id") not in (None, "") else example_id(prompt, answer)
    return Example(id=identifier, prompt=prompt, answer=answer, info=dict(info))


def _read_file(path: Path) -> Iterable[tuple[str, Any]]:
    if not path.exists():
        raise DatasetError(f"dataset file not found: {path}")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of rows")
        for i, row in enumerate(data):
            yield f"{path} row {i}", row
        return
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path} line {line_number}: not valid JSON ({error.msg})") from None
            yield f"{path} line {line_number}", row


def load_examples(
    source: Any, system_prompt: str | None = None, require_answer: bool = False
) -> list[Example]:
    """Load examples from a list of rows, a .jsonl/.json path or a ``datasets.Dataset``."""
    if source is None:
        return []
    if isinstance(source, str | Path):
        rows: Iterable[tuple[str, Any]] = _read_file(Path(source))
    else:
        rows = ((f"dataset row {i}", row) for i, row in enumerate(source))
    examples = [row_to_example(row, where, system_prompt, require_answer) for where, row in rows]
    seen: dict[str, int] = {}
    for i, example in enumerate(examples):
        if example.id in seen:
            # Duplicated problems would count twice in a paired comparison; keep ids unique.
            example.id = f"{example.id}-{i}"
        seen[example.id] = i
    return examples
