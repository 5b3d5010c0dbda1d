"""``rewardlab data generate``: a dataset drawn from a user's generator function, every row checked.

Rows are laid out by level: level L owns the row indices ``[start_L, start_L + n_L)``, where ``n_L`` is its
share of the rows (largest remainders, so the counts sum to ``rows``). Row ``i`` is the first of its draws
that passes; draw ``a`` of row ``i`` calls the generator with ``random.Random(f"{seed}:{i}:{a}")``. A draw
fails when the generator raises, returns something that is not an object, breaks the schema, or makes a
row an environment could not load; it is kept in ``<stem>.rejected.jsonl`` with its reason. With
``balance``, a draw whose class already has its share of the level is passed over (not a rejection).

So a row depends on the seed, its index and the rows before it in its level (the balance counts), all of
which the output file holds: a rerun of the same command reads the rows already written (dropping a last
line cut short) and goes on from the next index, producing the rows an uninterrupted run would have. The
settings are hashed into ``<out>.meta.json``; a rerun with other settings is refused rather than mixed in.
Each row is flushed to the file as it is written, so an interrupted process loses at most the row it was
writing.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rewardlab import atomic
from rewardlab.config import DataGenerateConfig
from rewardlab.console import progress
from rewardlab.data.endpoint import DrawRejected, TemplateGenerator
from rewardlab.data.sources import (
    Rejection,
    RowSchema,
    field_value,
    fingerprint,
    load_generator,
    load_schema,
)
from rewardlab.envs.dataset import row_to_example
from rewardlab.errors import DatasetError, RewardlabError


@dataclass
class GenerateResult:
    out: Path
    written: int  # by this call
    total: int  # in the file now
    resumed_from: int  # rows already there when this call started
    seconds: float
    rejected: Counter = field(default_factory=Counter)  # reason -> draws
    passed_over: int = 0  # draws of a class that already had its share
    unfilled: list[str] = field(default_factory=list)  # one line per level whose classes ran short
    prompt_tokens: int = 0  # a template's requests, as the endpoint counted them
    completion_tokens: int = 0
    usd: float | None = None  # their price, when priced

    @property
    def rows_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        resumed = f" (resumed after {self.resumed_from})" if self.resumed_from else ""
        rejected = ", ".join(f"{count} {reason}" for reason, count in self.rejected.most_common())
        tokens = ""
        if self.prompt_tokens or self.completion_tokens:
            price = f", ${self.usd:,.4f}" if self.usd is not None else ""
            tokens = f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} reply tokens{price}; "
        return (
            f"{self.written} rows written{resumed}, {self.total} in {self.out}; rejected: "
            f"{sum(self.rejected.values())}{f' ({rejected})' if rejected else ''}; "
            f"{f'{self.passed_over} passed over (class full); ' if self.passed_over else ''}{tokens}"
            f"{self.rows_per_second:,.1f} rows/s"
        )


def level_plan(rows: int, levels: dict[int, float] | None) -> list[tuple[int | None, int, int]]:
    """``(level, first index, rows)`` for each level in order: shares rounded by largest remainder."""
    if not levels:
        return [(None, 0, rows)]
    exact = {level: share * rows for level, share in sorted(levels.items())}
    counts = {level: math.floor(value) for level, value in exact.items()}
    by_remainder = sorted(exact, key=lambda level: (-(exact[level] - counts[level]), level))
    for level in by_remainder[: rows - sum(counts.values())]:
        counts[level] += 1
    plan, start = [], 0
    for level, count in counts.items():
        plan.append((level, start, count))
        start += count
    return plan


def class_quotas(count: int, values: list[Any]) -> dict[str, int]:
    """Equal shares of ``count`` rows among ``values`` (by their JSON text); the first ones get the rest."""
    base, extra = divmod(count, len(values))
    return {_key(value): base + (i < extra) for i, value in enumerate(values)}


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def package_version() -> str:
    try:
        return version("rewardlab")
    except PackageNotFoundError:
        return "unknown"


def settings_of(cfg: DataGenerateConfig) -> dict[str, Any]:
    """What decides the rows: a rerun into the same file must match it. Files are hashed by content, so an
    edited generator or schema counts as other settings too."""
    settings = cfg.model_dump(mode="json", exclude={"out"})
    settings["generator_file"] = fingerprint(cfg.generator or "")
    settings["schema_file"] = fingerprint(cfg.row_schema or "")
    settings["template_file"] = fingerprint(cfg.template or "")
    return settings


def _meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def rejected_path(out: Path) -> Path:
    return out.with_name(out.stem + ".rejected.jsonl")


def _read_jsonl(path: Path, cut: bool) -> list[dict]:
    """The whole lines of ``path``; a last line without its newline (the write an interruption cut short)
    is dropped, and with ``cut`` removed from the file too."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if cut and end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    rows = []
    for number, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise RewardlabError(
                    f"{path} line {number}: not valid JSON ({error.msg}); not ours?"
                ) from None
    return rows


def _claim(out: Path, settings: dict[str, Any]) -> None:
    """Refuse an output written with other settings (or not by this command); record ours."""
    meta_path = _meta_path(out)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    if out.exists() and out.stat().st_size:
        if not meta_path.exists():
            raise RewardlabError(
                f"{out} exists and was not written by data generate ({meta_path.name} is missing)"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("settings_hash") != digest:
            before = meta.get("settings", {})
            changed = sorted(key for key in settings if before.get(key) != settings[key])
            raise RewardlabError(
                f"{out} was generated with other settings ({', '.join(changed) or 'unknown'} differ): rerun "
                f"with the same ones to resume, or write to another --out"
            )
        return
    meta = {"settings": settings, "settings_hash": digest, "rewardlab_version": package_version()}
    atomic.write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")


class Drawer:
    """Draws row ``index`` of a level: the generator, the checks, the balance, the provenance."""

    def __init__(self, cfg: DataGenerateConfig, generator, schema: RowSchema, rejected_file):
        self.cfg, self.generator, self.schema, self.rejected_file = cfg, generator, schema, rejected_file
        self.rejected: Counter = Counter()
        self.passed_over = 0
        self.dealing = isinstance(generator, TemplateGenerator)  # it deals the balanced class in turn
        self.provenance = {
            "generator": cfg.generator,
            "schema": cfg.row_schema,
            "seed": cfg.seed,
            "rewardlab_version": package_version(),
            **getattr(generator, "provenance", {}),  # a template's: its version, the model, the endpoint
        }

    def draw(self, index: int, level: int | None, counts: Counter, quotas: dict[str, int] | None, turn: int):
        """The row, or None when every valid draw belonged to a class already full. ``turn`` is the row's
        place in its level, which a template deals its balanced class by (every attempt the same class)."""
        last: Rejection | None = None
        valid = 0
        for attempt in range(self.cfg.max_attempts):
            row = None
            try:
                rng = draw_rng(self.cfg.seed, index, attempt)
                row = self.generator(rng, level, turn) if self.dealing else self.generator(rng, level)
            except DrawRejected as rejected:  # a template's reply that is not JSON
                made, problem = None, rejected.rejection
            except RewardlabError:  # an endpoint that refuses: the command stops, the rows written stay
                raise
            except Exception as error:  # the user's code: a failed draw, counted, not a crash
                made, problem = None, Rejection(f"generator raised {type(error).__name__}", repr(error))
            else:
                made, problem = self._checked(row, index, level, attempt)
            if problem is not None:
                last = problem
                self._reject(index, level, attempt, problem, row)
                continue
            valid += 1
            if quotas is not None:
                key = _key(field_value(row, self.cfg.balance or ""))
                if counts[key] >= quotas[key]:
                    self.passed_over += 1
                    continue
                counts[key] += 1
            return made
        if valid:
            return None
        raise RewardlabError(
            f"row {index} (level {level}): none of {self.cfg.max_attempts} draws passed; the last: "
            f"{last.reason}: {last.message}"
        )

    def _checked(self, row: Any, index: int, level: int | None, attempt: int):
        if not isinstance(row, dict):
            return None, Rejection("not an object", f"the generator returned a {type(row).__name__}")
        problem = self.schema.check(row)
        if problem is not None:
            return None, problem
        info = row.get("info") if row.get("info") is not None else {}
        if not isinstance(info, dict):
            return None, Rejection("environment: info not an object", f"info is a {type(info).__name__}")
        info = dict(info)
        if level is not None:
            info.setdefault("level", level)  # what a curriculum orders by
        info["provenance"] = {
            **self.provenance,
            "level": level,
            "index": index,
            "attempt": attempt,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        made = {**row, "info": info}
        try:
            if self.cfg.environment_rows:
                row_to_example(made, f"row {index}")
            line = json.dumps(made, ensure_ascii=False)
        except DatasetError as error:
            return None, Rejection("environment cannot load it", str(error))
        except (TypeError, ValueError) as error:
            return None, Rejection("not JSON", str(error))
        return line, None

    def _reject(self, index: int, level: int | None, attempt: int, problem: Rejection, row: Any) -> None:
        self.rejected[problem.reason] += 1
        entry = {"index": index, "level": level, "attempt": attempt, "reason": problem.reason}
        entry.update(message=problem.message, row=row)
        self.rejected_file.write(json.dumps(entry, ensure_ascii=False, default=repr) + "\n")


def _resumed_rejections(path: Path, next_index: int) -> None:
    """Keep the rejections of rows already written; the rest are drawn again."""
    kept = [entry for entry in _read_jsonl(path, cut=False) if entry.get("index", 0) < next_index]
    if path.exists():
        atomic.write_text(path, "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in kept))


def draw_rng(seed: int, index: int, attempt: int) -> random.Random:
    return random.Random(f"{seed}:{index}:{attempt}")


def generate(cfg: DataGenerateConfig) -> GenerateResult:
    """Write (or finish writing) ``cfg.out``; see the module's docstring."""
    if not (cfg.generator or cfg.template):
        raise RewardlabError("data generate needs --generator (a function) or --template (a model's rows)")
    for name, value in (("schema", cfg.row_schema), ("out", cfg.out)):
        if not value:
            raise RewardlabError(f"data generate needs --{name}")
    schema = load_schema(cfg.row_schema)
    generator = TemplateGenerator(cfg, schema) if cfg.template else load_generator(cfg.generator)
    try:
        return _generate(cfg, generator, schema)
    finally:
        if isinstance(generator, TemplateGenerator):
            generator.close()


def _generate(cfg: DataGenerateConfig, generator, schema: RowSchema) -> GenerateResult:
    out = Path(cfg.out)
    values = schema.values(cfg.balance) if cfg.balance else None
    out.parent.mkdir(parents=True, exist_ok=True)
    _claim(out, settings_of(cfg))
    existing = _read_jsonl(out, cut=True)
    next_index = existing[-1]["info"]["provenance"]["index"] + 1 if existing else 0
    _resumed_rejections(rejected_path(out), next_index)
    started, written, unfilled = time.perf_counter(), 0, []
    with (
        open(out, "a", encoding="utf-8") as rows_file,
        open(rejected_path(out), "a", encoding="utf-8") as rejected_file,
        progress("generating rows", total=cfg.rows) as advance,
    ):
        advance(len(existing))
        drawer = Drawer(cfg, generator, schema, rejected_file)
        for level, start, count in level_plan(cfg.rows, cfg.levels):
            if start + count <= next_index:
                continue
            of_level = [row for row in existing if row["info"]["provenance"]["level"] == level]
            counts = Counter(_key(field_value(row, cfg.balance)) for row in of_level if cfg.balance)
            quotas = class_quotas(count, values) if values else None
            ahead = max(start, next_index)
            for index in range(max(start, next_index), start + count):
                if drawer.dealing and index >= ahead:  # a template's requests, sent together
                    ahead = min(start + count, index + 4 * cfg.concurrency)
                    draws = [(draw_rng(cfg.seed, i, 0), level, i - start) for i in range(index, ahead)]
                    generator.prefetch(draws)
                line = drawer.draw(index, level, counts, quotas, turn=index - start)
                if line is None:
                    unfilled.append(_short_classes(cfg, level, counts, quotas))
                    break
                rejected_file.flush()  # this row's rejections reach the file before the row does
                rows_file.write(line + "\n")
                rows_file.flush()  # an interruption loses at most this row
                written += 1
                advance(1, rejected=sum(drawer.rejected.values()))
    result = GenerateResult(
        out, written, len(existing) + written, len(existing), time.perf_counter() - started,
        drawer.rejected, drawer.passed_over, unfilled,
    )  # fmt: skip
    if isinstance(generator, TemplateGenerator):
        stats = generator.stats
        result.prompt_tokens, result.completion_tokens = stats.prompt_tokens, stats.completion_tokens
        if cfg.usd_per_million_input or cfg.usd_per_million_output:
            result.usd = (
                result.prompt_tokens * cfg.usd_per_million_input
                + result.completion_tokens * cfg.usd_per_million_output
            ) / 1e6
    return result


def _short_classes(cfg: DataGenerateConfig, level, counts: Counter, quotas: dict[str, int]) -> str:
    short = ", ".join(f"{key} {counts[key]}/{quota}" for key, quota in quotas.items() if counts[key] < quota)
    return (
        f"level {level}: could not fill {cfg.balance} = {short} within {cfg.max_attempts} draws per row; "
        f"the level has fewer rows"
    )
