"""``rewardlab data inspect``: what a dataset holds, counted before anything trains on it.

:func:`inspect_dataset` reads a JSONL file of rows (``prompt``, ``answer``, ``info``; as ``data generate``
writes them, or any environment's dataset) in one pass and returns an :class:`Inspection` of plain counts:
rows per level (``info.level``, else ``info.provenance.level``) and per class (a dotted field, by default
the ``balance`` that ``data generate`` recorded in ``<file>.meta.json``), the rejected draws of the sibling
``<stem>.rejected.jsonl`` per reason, prompt and answer lengths, duplicate prompts, and a few sample rows.
:mod:`~rewardlab.data.inspect_view` prints it as tables and draws it as PNGs; the counting is tested on
numbers alone.

A line that is not JSON, or not an object, stops the inspection with one line naming the file and line; a
last line without its newline that is not JSON either is the write an interruption cut short (``data
generate`` drops it when it resumes), so it is noted and left out instead.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardlab.data.generate import rejected_path
from rewardlab.data.sources import field_value
from rewardlab.errors import RewardlabError

# Sample rows are drawn with this seed, so the same file always shows the same rows.
SAMPLE_SEED = 0
# More classes than this are cut to the most common in tables and plots; the counts keep them all.
SHOWN_CLASSES = 30

Label = int | str | None  # a level or class: an int stays one, other values are their JSON text


@dataclass
class LengthStats:
    """Nearest-rank percentiles (each one a real row's length) and the maximum."""

    p50: int
    p95: int
    max: int

    @classmethod
    def of(cls, values: list[int]) -> LengthStats | None:
        if not values:
            return None
        ordered = sorted(values)

        def rank(q: float) -> int:
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return cls(rank(0.5), rank(0.95), ordered[-1])


@dataclass
class Sample:
    line: int
    level: Label
    label: Label
    prompt: str
    answer: str


@dataclass
class Inspection:
    path: Path
    rows: int = 0
    levels: Counter = field(default_factory=Counter)  # level -> rows; None: rows without one; {} if none has
    balance: str | None = None  # the class field
    balance_from: str | None = None  # "--balance" or the meta file it was read from
    classes: Counter = field(default_factory=Counter)  # class -> rows (None: rows without the field)
    cross: Counter = field(default_factory=Counter)  # (level, class) -> rows
    rejected_file: Path | None = None  # None when there is none beside the dataset
    rejected: Counter = field(default_factory=Counter)  # reason -> rejected draws
    prompt_chars: list[int] = field(default_factory=list)  # per row, in file order
    prompt_words: list[int] = field(default_factory=list)
    answer_chars: list[int] = field(default_factory=list)
    answer_words: list[int] = field(default_factory=list)
    row_levels: list[Label] = field(default_factory=list)  # per row, for lengths by level
    duplicate_prompts: int = 0  # rows whose prompt an earlier row already has
    repeated_prompts: int = 0  # distinct prompts that occur more than once
    conflicting_prompts: int = 0  # of those, prompts given more than one answer
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # cut-short lines, an unreadable meta file, ...

    @property
    def lengths(self) -> dict[str, LengthStats | None]:
        return {
            "prompt characters": LengthStats.of(self.prompt_chars),
            "prompt words": LengthStats.of(self.prompt_words),
            "answer characters": LengthStats.of(self.answer_chars),
            "answer words": LengthStats.of(self.answer_words),
        }


def default_plot_dir(path: Path) -> Path:
    """``<stem>.inspect/`` beside the dataset."""
    return path.with_name(path.stem + ".inspect")


def meta_path(path: Path) -> Path:
    """Where ``data generate`` records the settings of ``path`` (``<file>.meta.json``)."""
    return path.with_name(path.name + ".meta.json")


# -- reading -------------------------------------------------------------------------------------------


def _json_kind(value: Any) -> str:
    kinds = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def read_objects(path: Path, notes: list[str]) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of ``path``; one-line errors for the rest."""
    if not path.exists():
        raise RewardlabError(f"{path}: no such file")
    if not path.is_file():
        raise RewardlabError(f"{path}: not a file")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except RecursionError:
                raise RewardlabError(f"{path} line {number}: nested too deeply to read") from None
            except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
                if not raw.endswith(b"\n"):
                    notes.append(
                        f"{path} line {number} is cut short (no newline at the end, not JSON): left out"
                    )
                    return
                problem = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8 text"
                raise RewardlabError(f"{path} line {number}: not valid JSON ({problem})") from None
            if not isinstance(row, dict):
                raise RewardlabError(f"{path} line {number}: {_json_kind(row)}, not an object")
            yield number, row


def _label(value: Any) -> Label:
    """A level or class as a dictionary key: ints and strings as they are (``True`` would equal ``1``, so it
    is its JSON text, as is any other value); ``None`` for a row without one."""
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def label_order(label: Label) -> tuple:
    """Numbers first, in order; then text; rows without a value last."""
    if label is None:
        return (2, 0, "")
    return (0, label, "") if isinstance(label, int) else (1, 0, label)


def _level(row: dict) -> Label:
    info = row.get("info")
    if not isinstance(info, dict):
        return None
    level = info.get("level")
    return _label(level if level is not None else field_value(info, "provenance.level"))


def _text(value: Any) -> str:
    """What a row says, as text: a prompt's messages joined, anything else that is not text as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(message, dict) for message in value):
        return "\n".join(str(message.get("content", "")) for message in value)
    return json.dumps(value, ensure_ascii=False)


def _recorded_balance(path: Path, notes: list[str]) -> tuple[str | None, str | None]:
    meta = meta_path(path)
    if not meta.is_file():
        return None, None
    try:
        balance = json.loads(meta.read_text(encoding="utf-8")).get("settings", {}).get("balance")
    except (ValueError, AttributeError, OSError):
        notes.append(f"{meta} cannot be read as data generate's settings; no class field taken from it")
        return None, None
    return (balance, meta.name) if isinstance(balance, str) and balance else (None, None)


def _field_names(row: dict) -> str:
    """The fields of a row, one level into objects, for an error that says what there is instead."""
    names = []
    for key, value in row.items():
        names.append(key)
        if isinstance(value, dict):
            names.extend(f"{key}.{inner}" for inner in value)
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


# -- counting ------------------------------------------------------------------------------------------


def inspect_dataset(path: str | Path, balance: str | None = None, samples: int = 3) -> Inspection:
    """Count ``path`` (see the module's docstring). ``balance`` names the class field (dotted); without it,
    the one recorded in ``<path>.meta.json``, if any. ``samples`` rows are drawn with a fixed seed."""
    path = Path(path)
    result = Inspection(path)
    if balance:
        result.balance, result.balance_from = balance, "--balance"
    else:
        result.balance, result.balance_from = _recorded_balance(path, result.notes)
    answers: dict[str, set[str]] = defaultdict(set)  # prompt -> the answers it is given
    prompt_rows: Counter = Counter()
    reservoir: list[Sample] = []
    draw = random.Random(SAMPLE_SEED)
    seen_balance, first_row, without_prompt = False, None, 0
    for number, row in read_objects(path, result.notes):
        first_row = first_row if first_row is not None else row
        level = _level(row)
        value = field_value(row, result.balance) if result.balance else None
        seen_balance = seen_balance or value is not None
        label = _label(value)
        prompt = row.get("prompt") if row.get("prompt") not in (None, "") else row.get("question")
        without_prompt += prompt in (None, "")
        prompt_text, answer_text = _text(prompt), _text(row.get("answer"))

        result.levels[level] += 1
        result.row_levels.append(level)
        if result.balance:
            result.classes[label] += 1
            result.cross[level, label] += 1
        result.prompt_chars.append(len(prompt_text))
        result.prompt_words.append(len(prompt_text.split()))
        result.answer_chars.append(len(answer_text))
        result.answer_words.append(len(answer_text.split()))
        key = prompt_text if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
        prompt_rows[key] += 1
        answers[key].add(answer_text)

        sample = Sample(number, level, label, prompt_text, answer_text)
        if len(reservoir) < samples:  # reservoir sampling: every row equally likely, in one pass
            reservoir.append(sample)
        elif samples:
            slot = draw.randrange(result.rows + 1)
            if slot < samples:
                reservoir[slot] = sample
        result.rows += 1

    if result.balance and result.rows and not seen_balance:
        where = "" if result.balance_from == "--balance" else f" (the balance {result.balance_from} records)"
        raise RewardlabError(
            f"--balance {result.balance}{where}: no row of {path} has it "
            f"(its first row has: {_field_names(first_row)})"
        )
    if set(result.levels) == {None}:  # no row has a level: nothing to count by
        result.levels.clear()
    result.duplicate_prompts = result.rows - len(prompt_rows)
    result.repeated_prompts = sum(1 for count in prompt_rows.values() if count > 1)
    result.conflicting_prompts = sum(
        1 for key, count in prompt_rows.items() if count > 1 and len(answers[key]) > 1
    )
    result.samples = sorted(reservoir, key=lambda sample: sample.line)
    if without_prompt:
        result.notes.append(f"{without_prompt} rows have no prompt (or question); counted as length 0")
    _count_rejected(result)
    return result


def _count_rejected(result: Inspection) -> None:
    """Reasons of ``<stem>.rejected.jsonl``: ``data generate``'s rejected draws and any filter's removals
    written in the same form (each line an object with at least ``reason``)."""
    path = rejected_path(result.path)
    if not path.is_file():
        return
    result.rejected_file = path
    for _, entry in read_objects(path, result.notes):
        reason = entry.get("reason")
        result.rejected[str(reason) if reason not in (None, "") else "(no reason given)"] += 1
