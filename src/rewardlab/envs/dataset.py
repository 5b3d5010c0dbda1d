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
            role = message["role"]
            if not isinstance(role, str) or role not in ROLES:
                shown = f"'{role}'" if isinstance(role, str) else f"{role!r} ({type(role).__name__})"
                known = ", ".join(sorted(ROLES))
                raise DatasetError(f"{where}: prompt message {i} has unknown role {shown} (roles: {known})")
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
    elif isinstance(row["answer"], str):
        answer = row["answer"]
    else:
        try:
            answer = json.dumps(row["answer"])
        except (TypeError, ValueError, RecursionError) as error:
            raise DatasetError(f"{where}: 'answer' is neither text nor JSON ({error})") from None
    info = row.get("info") or {}
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{where}: 'info' is a string but not JSON ({error.msg})") from None
        except RecursionError:
            raise DatasetError(f"{where}: 'info' is nested too deeply to read") from None
    if not isinstance(info, Mapping):
        raise DatasetError(f"{where}: 'info' must be an object")
    _check_unicode(where, {"prompt": prompt, "answer": answer, "info": info, "id": row.get("id")})
    identifier = str(row["id"]) if row.get("id") not in (None, "") else example_id(prompt, answer)
    return Example(id=identifier, prompt=prompt, answer=answer, info=dict(info))


def _check_unicode(where: str, fields: Mapping[str, Any]) -> None:
    """Every text of the row can be written as UTF-8 (hashed, stored, tokenized, printed): a lone surrogate,
    which a JSON file can hold as an escape (``"\\ud800"``), cannot."""
    for name, value in fields.items():
        try:
            json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError as error:
            bad = error.object[error.start : error.end]
            raise DatasetError(
                f"{where}: '{name}' holds {bad!r}, a lone surrogate: not text (UTF-8 cannot encode it)"
            ) from None
        except (ValueError, RecursionError):  # circular or too deep: not what these checks are about
            continue


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark; anything else is a one-line error."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DatasetError(f"{path} line {line}: not UTF-8 text (byte {error.start})") from None


def _read_file(path: Path) -> Iterable[tuple[str, Any]]:
    if not path.exists():
        raise DatasetError(f"dataset file not found: {path}")
    text = _read_text(path)
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
        except RecursionError:
            raise DatasetError(f"{path}: nested too deeply to read") from None
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of rows")
        for i, row in enumerate(data):
            yield f"{path} row {i}", row
        return
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as a file read as text splits them
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path} line {line_number}: not valid JSON ({error.msg})") from None
        except RecursionError:
            raise DatasetError(f"{path} line {line_number}: nested too deeply to read") from None
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
