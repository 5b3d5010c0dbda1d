"""``rewardlab data filter``: the rows of a dataset that pass every stage, split into train and held out.

Rows (``prompt``, ``answer``, ``info``, as ``data generate`` writes them) go through the stages in order;
each stage sees only the rows every earlier one kept, and counts what it rejects:

1. ``loadable``: an environment could load the row (an object with a prompt; ``info`` an object);
2. ``schema``: the row satisfies ``--schema`` (as in ``data generate``);
3. ``checks``: every ``--check`` function returns None (a string is its reason to reject the row; a check
   that raises rejects the row too, with what it raised);
4. ``oracle``: with ``--env``, the environment's gold reply for the row (its ``demonstration``: the answer in
   the parser's format, or what the environment knows better, such as arithmetic recomputed from ``info``;
   its ``oracle`` player for a multi-turn environment) gets the rubric's maximum total, the sum of its
   positive weights (rewards are in [0, 1]). A row whose label its own checker does not accept is rejected;
5. ``dedup``: a row whose normalised prompt (whitespace collapsed, lowercased) repeats a kept row's, or with
   ``near`` whose word 3-gram MinHash estimates a Jaccard similarity of ``near_threshold`` or more, is
   rejected as a duplicate of the first;
6. ``contamination``: a row whose prompt equals or nearly equals one in a ``--contamination`` file;
7. ``judge``: with ``judge_base_url``, a model reads each row left and accepts it or says why not
   (:class:`Judge`).

The rows kept are then split by a hash of their normalised prompt alone, so a row's side does not depend
on the order of the rows or on which other rows there are. A stage is an object with a ``name`` and
``run(rows, advance) -> {row index: Rejection}``; :func:`build_stages` lists them. Outputs are written
only when every stage has run, each file atomically: a bad input stops the command before anything is
written.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from rewardlab import atomic
from rewardlab.config.commands import DataFilterConfig
from rewardlab.console import progress
from rewardlab.data.generate import rejected_path
from rewardlab.data.sources import Rejection, RowSchema, load_object, load_schema
from rewardlab.envs.dataset import row_to_example
from rewardlab.errors import DatasetError, RewardlabError
from rewardlab.sampling.base import Prompt, SamplingParams

NUM_PERM = 128  # MinHash permutations: the similarity estimate's standard deviation is about 0.03 near 0.9
SHINGLE_WORDS = 3
ORACLE_BATCH = 256  # rows rolled out and scored at a time (the progress bar moves per batch)
Advance = Callable[..., None]


@dataclass
class Row:
    index: int  # among the input's rows, from 0 (blank lines are not rows)
    line: str  # as read: what an accepted row is written back as
    data: Any
    text: str = ""  # the normalised prompt, set by the loadable stage


def normalised(text: str) -> str:
    """What two prompts are compared by: whitespace collapsed, lowercased."""
    return " ".join(text.split()).lower()


def prompt_text(row: Any) -> str | None:
    """A row's prompt as text (a chat prompt's message contents, one per line); None without one."""
    prompt = (row.get("prompt") or row.get("question")) if isinstance(row, dict) else None
    if isinstance(prompt, list):
        return "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return prompt if isinstance(prompt, str) and prompt else None


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def held_out_position(text: str) -> float:
    """Where a normalised prompt falls in [0, 1): below the held-out fraction, it is held out."""
    return int(prompt_hash(text)[:8], 16) / 2**32


def read_rows(path: Path, what: str) -> list[tuple[int, str, Any]]:
    """``(line number, line, parsed)`` for each non-blank line of a JSONL file; a line that is not JSON is a
    one-line error naming the file and the line."""
    if not path.is_file():
        raise RewardlabError(f"{what} file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RewardlabError(f"{path}: not UTF-8 text (byte {error.start})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, line, json.loads(line)))
        except json.JSONDecodeError as error:
            raise RewardlabError(f"{path} line {number}: not valid JSON ({error.msg})") from None
        except RecursionError:
            raise RewardlabError(f"{path} line {number}: nested too deeply to read") from None
    return rows


# -- near duplicates ----------------------------------------------------------------------------------------


def shingles(text: str) -> list[bytes]:
    """Word 3-grams of a normalised text (a shorter text is one shingle)."""
    words = text.split()
    if len(words) <= SHINGLE_WORDS:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + SHINGLE_WORDS]).encode() for i in range(len(words) - SHINGLE_WORDS + 1)]


def minhashes(texts: list[str]) -> list:
    from datasketch import MinHash

    # bulk shares one set of permutations (seeded: the same text always gets the same signature)
    return MinHash.bulk([shingles(text) for text in texts], num_perm=NUM_PERM) if texts else []


def lsh_bands(threshold: float) -> tuple[int, int]:
    """``(bands, rows per band)`` such that every pair whose MinHash estimate reaches ``threshold`` shares a
    band: such a pair differs in at most ``(1 - threshold) * NUM_PERM`` slots, fewer than there are bands, so
    one band is untouched. The index then only saves comparisons; it never misses a pair."""
    bands = math.floor((1 - threshold) * NUM_PERM + 1e-9) + 1
    return bands, NUM_PERM // bands


class NearIndex:
    """MinHash LSH over signatures added under keys; :meth:`closest` is the most similar one kept, by the
    MinHash estimate of Jaccard similarity, when it reaches the threshold."""

    def __init__(self, threshold: float):
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, params=lsh_bands(threshold))
        self.signatures: dict[Any, Any] = {}

    def add(self, key: Any, signature) -> None:
        self.lsh.insert(key, signature)
        self.signatures[key] = signature

    def closest(self, signature) -> tuple[Any, float] | None:
        # LSH candidates are probably similar; the estimate decides (ties go to the earliest key).
        scored = [(signature.jaccard(self.signatures[key]), key) for key in self.lsh.query(signature)]
        scored = [(similarity, key) for similarity, key in scored if similarity >= self.threshold]
        if not scored:
            return None
        similarity, key = min(scored, key=lambda pair: (-pair[0], pair[1]))
        return key, similarity


# -- stages -------------------------------------------------------------------------------------------------


class Stage:
    """One pass over the rows still in (in input order): their rejections, by row index."""

    name = "stage"

    def run(self, rows: list[Row], advance: Advance) -> dict[int, Rejection]:
        rejected = {}
        for row in rows:
            problem = self.check(row)
            if problem is not None:
                rejected[row.index] = problem
            advance(1)
        return rejected

    def check(self, row: Row) -> Rejection | None:
        raise NotImplementedError


class Loadable(Stage):
    """An environment could load it: what every later stage reads (the prompt) is there."""

    name = "loadable"

    def check(self, row: Row) -> Rejection | None:
        try:
            row_to_example(row.data, f"row {row.index}")
        except DatasetError as error:
            return Rejection("environment cannot load it", str(error))
        row.text = normalised(prompt_text(row.data) or "")
        return None


class SchemaStage(Stage):
    name = "schema"

    def __init__(self, schema: RowSchema):
        self.schema = schema

    def check(self, row: Row) -> Rejection | None:
        return self.schema.check(row.data)


class Checks(Stage):
    """The user's checks, in order; the first that rejects a row gives the reason."""

    name = "checks"

    def __init__(self, specs: list[str]):
        self.checks = []
        for spec in specs:
            check = load_object(spec, "check")
            if not callable(check):
                raise RewardlabError(f"check '{spec}' is a {type(check).__name__}, not a function")
            self.checks.append((spec.rpartition(":")[2], check))

    def check(self, row: Row) -> Rejection | None:
        for name, check in self.checks:
            try:
                reason = check(copy.deepcopy(row.data))  # a check that edits its row edits a copy
            except Exception as error:  # the user's code: a counted rejection, not a crash
                return Rejection(f"check {name} raised {type(error).__name__}", repr(error))
            if reason is None:
                continue
            detail = reason
            if isinstance(reason, tuple) and len(reason) == 2 and all(isinstance(r, str) for r in reason):
                reason, detail = reason  # counted by the reason; the detail (which event, which value) kept
            if not isinstance(reason, str):
                raise RewardlabError(
                    f"check {name} returned a {type(reason).__name__} for row {row.index}: a check returns "
                    f"a reason (str, or a (reason, detail) pair) to reject the row, or None to accept it"
                )
            return Rejection(f"check {name}: {reason}", f"check {name} rejected the row: {detail}")
        return None


class _GoldPlayer:
    """A sampler whose every reply is the environment's gold one; what raises is kept, per example."""

    def __init__(self, env):
        self.env = env
        self.policy = None if env.max_turns == 1 else env.policies()["oracle"]
        self.failures: dict[int, str] = {}  # id(example) -> what raised
        self.rng = random.Random(0)

    def generate(self, prompts, params):
        from rewardlab.sampling.base import Generation

        replies = []
        for prompt in prompts:
            try:
                if self.policy is None:
                    text = self.env.demonstration(prompt.example)
                else:
                    text = self.policy(prompt.messages, prompt.state or {}, prompt.example, self.rng)
            except Exception as error:  # the environment's code meeting a row it cannot read
                self.failures.setdefault(id(prompt.example), f"{type(error).__name__}: {error}")
                text = ""
            replies.append([Generation(text=text)])
        return replies


class Oracle(Stage):
    """The environment's gold reply must earn the rubric's maximum: a label its checker disagrees with, or a
    row its checker cannot read, is not a training example."""

    name = "oracle"

    def __init__(self, env_name: str, env_args: dict[str, Any]):
        from rewardlab.envs.registry import load_environment

        self.env = load_environment(env_name, **env_args)
        if self.env.max_turns > 1 and "oracle" not in self.env.policies():
            raise RewardlabError(
                f"environment '{self.env.name}' is multi-turn and has no 'oracle' player to play a row's "
                f"gold episode: leave out --env"
            )
        self.maximum = sum(weight for weight in self.env.rubric.weights.values() if weight > 0)

    def run(self, rows: list[Row], advance: Advance) -> dict[int, Rejection]:
        from rewardlab.sampling.base import SamplingParams

        rejected = {}
        for start in range(0, len(rows), ORACLE_BATCH):
            batch = rows[start : start + ORACLE_BATCH]
            examples = [row_to_example(row.data, f"row {row.index}", self.env.system_prompt) for row in batch]
            player = _GoldPlayer(self.env)
            scored = self.env.rubric.score(self.env.rollout(player, examples, SamplingParams(n=1)))
            for row, example, result in zip(batch, examples, scored, strict=True):
                problem = self._judged(result, player.failures.get(id(example)))
                if problem is not None:
                    rejected[row.index] = problem
            advance(len(batch))
        return rejected

    def _judged(self, result, failure: str | None) -> Rejection | None:
        if failure is not None:
            return Rejection(f"oracle raised {failure.partition(':')[0]}", f"the gold reply raised {failure}")
        if result.reward >= self.maximum - 1e-9:
            return None
        parts = [
            f"{name} {'error' if value is None else f'{value:g}'}"
            for name, value in result.components.items()
        ]
        errors = "; ".join(f"{name}: {error}" for name, error in result.errors.items())
        reply = result.rollout.completion_text
        return Rejection(
            "oracle below maximum",
            f"scored {result.reward:g} of {self.maximum:g} ({', '.join(parts)})"
            f"{f'; errors: {errors}' if errors else ''}; the gold reply: {reply[:200]!r}",
        )


class Dedup(Stage):
    """The first of equal (or, with ``near``, similar) prompts stays; later ones are its duplicates."""

    name = "dedup"

    def __init__(self, mode: str, threshold: float):
        self.near = mode == "near"
        self.threshold = threshold
        if self.near:
            import datasketch  # noqa: F401  (imported here, with the other stages' set-up, not mid-run)

    def run(self, rows: list[Row], advance: Advance) -> dict[int, Rejection]:
        first: dict[str, int] = {}  # prompt hash -> the kept row's index
        index = NearIndex(self.threshold) if self.near else None
        signatures = minhashes([row.text for row in rows]) if self.near else [None] * len(rows)
        rejected = {}
        for row, signature in zip(rows, signatures, strict=True):
            digest = prompt_hash(row.text)
            if digest in first:
                rejected[row.index] = Rejection(
                    f"duplicate of row {first[digest]}", "exact duplicate: the same normalised prompt"
                )
            elif index is not None and (match := index.closest(signature)) is not None:
                kept, similarity = match
                rejected[row.index] = Rejection(
                    f"duplicate of row {kept}",
                    f"near duplicate: estimated Jaccard similarity {similarity:.3f} of word 3-grams "
                    f"(>= {self.threshold:g})",
                )
            else:
                first[digest] = row.index
                if index is not None:
                    index.add(row.index, signature)
            advance(1)
        return rejected


class Contamination(Stage):
    """No row may repeat, or nearly repeat, a prompt of the given files (an eval set)."""

    name = "contamination"

    def __init__(self, files: list[str], threshold: float):
        self.threshold = threshold
        self.exact: dict[str, tuple[str, int]] = {}  # prompt hash -> (file, row)
        references: list[tuple[tuple[str, int], str]] = []
        for name in files:
            for position, (number, _, data) in enumerate(read_rows(Path(name), "contamination")):
                text = prompt_text(data)
                if text is None:
                    raise RewardlabError(f"{name} line {number}: no prompt to compare with")
                text = normalised(text)
                self.exact.setdefault(prompt_hash(text), (name, position))
                references.append(((name, position), text))
        self.index = NearIndex(threshold)
        for (key, _), signature in zip(references, minhashes([text for _, text in references]), strict=True):
            if key not in self.index.signatures:
                self.index.add(key, signature)

    def run(self, rows: list[Row], advance: Advance) -> dict[int, Rejection]:
        rejected = {}
        for row, signature in zip(rows, minhashes([row.text for row in rows]), strict=True):
            hit = self.exact.get(prompt_hash(row.text))
            if hit is not None:
                how = "the same normalised prompt"
            elif (match := self.index.closest(signature)) is not None:
                hit, similarity = match
                how = f"estimated Jaccard similarity {similarity:.3f} of word 3-grams (>= {self.threshold:g})"
            if hit is not None:
                name, position = hit
                rejected[row.index] = Rejection(
                    f"contaminated: {name} row {position}", f"{how} as {name} row {position}"
                )
            advance(1)
        return rejected


JUDGE_PROMPT = """You check one row of a dataset that will train a model.

The task the model is given:
{prompt}

The answer it is expected to give:
{answer}

Is that answer correct, and is the task clear enough to have one right answer? Reply with JSON: first a
short reason, then accept (true or false)."""

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string", "pattern": "^[^\\n]{1,200}$"}, "accept": {"type": "boolean"}},
    "required": ["reason", "accept"],
    "additionalProperties": False,
}
JUDGE_BATCH = 64  # rows sent together; the sampler keeps judge_concurrency of them in flight


class Judge(Stage):
    """A model behind an OpenAI-compatible endpoint reads each row and accepts it or gives its reason not
    to. Its reply is held to :data:`JUDGE_SCHEMA` (``response_format``), at temperature 0; a reply that is
    not that JSON rejects the row too (``judge: reply not JSON``), counted apart. An endpoint that refuses
    or keeps failing stops the command before anything is written."""

    name = "judge"

    def __init__(self, cfg: DataFilterConfig):
        from rewardlab.sampling.openai_compat import OpenAISampler

        template = JUDGE_PROMPT
        if cfg.judge_prompt:
            path = Path(cfg.judge_prompt)
            if not path.is_file():
                raise RewardlabError(f"judge prompt file not found: {cfg.judge_prompt}")
            template = path.read_text(encoding="utf-8")
        unknown = sorted(set(re.findall(r"\{(\w+)\}", template)) - {"prompt", "answer"})
        if unknown:
            raise RewardlabError(
                f"judge prompt: {{{unknown[0]}}} is not a field it fills (it fills {{prompt}} and {{answer}})"
            )
        self.template = template
        self.sampler = OpenAISampler(
            cfg.judge_base_url, cfg.judge_model, api_key_env=cfg.judge_api_key_env,
            max_concurrency=cfg.judge_concurrency,
        )  # fmt: skip
        response_format = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": JUDGE_SCHEMA}}
        self.params = SamplingParams(temperature=0.0, max_new_tokens=160, response_format=response_format)

    def message(self, row: Row) -> Prompt:
        answer = row.data.get("answer")
        answer = answer if isinstance(answer, str) else json.dumps(answer)
        text = self.template.replace("{prompt}", prompt_text(row.data) or "").replace("{answer}", answer)
        return Prompt([{"role": "user", "content": text}])

    def run(self, rows: list[Row], advance: Advance) -> dict[int, Rejection]:
        rejected = {}
        try:
            for start in range(0, len(rows), JUDGE_BATCH):
                batch = rows[start : start + JUDGE_BATCH]
                replies = self.sampler.generate_each([(self.message(row), self.params) for row in batch])
                for row, reply in zip(batch, replies, strict=True):
                    problem = verdict(reply[0].text)
                    if problem is not None:
                        rejected[row.index] = problem
                advance(len(batch))
        finally:
            self.sampler.close()
        return rejected


def verdict(text: str) -> Rejection | None:
    """The judge's reply: None to keep the row, else why not."""
    try:
        reply = json.loads(text)
        accept, reason = reply["accept"], str(reply["reason"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return Rejection("judge: reply not JSON", f"the judge replied {text[:200]!r}")
    if accept is True:
        return None
    return Rejection("judge: rejected", f"the judge: {reason}")


def build_stages(cfg: DataFilterConfig) -> list[Stage]:
    """The stages ``cfg`` asks for, in order. Each is built (its files read, its code imported) before any
    row is looked at, so a mistake in the command stops it at once."""
    stages: list[Stage] = [Loadable()]
    if cfg.row_schema:
        stages.append(SchemaStage(load_schema(cfg.row_schema)))
    if cfg.checks:
        stages.append(Checks(cfg.checks))
    if cfg.env:
        stages.append(Oracle(cfg.env, cfg.env_args))
    if cfg.dedup != "none":
        stages.append(Dedup(cfg.dedup, cfg.near_threshold))
    if cfg.contamination:
        stages.append(Contamination(cfg.contamination, cfg.near_threshold))
    if cfg.judge_base_url:  # last: the costliest stage sees the fewest rows
        stages.append(Judge(cfg))
    return stages


# -- the whole pass -----------------------------------------------------------------------------------------


@dataclass
class StageCount:
    name: str
    seen: int
    rejected: int

    @property
    def kept(self) -> int:
        return self.seen - self.rejected


@dataclass
class FilterResult:
    out: Path
    held_out_path: Path
    rejected_path: Path
    rows: int  # read
    stages: list[StageCount]
    train: int
    held_out: int
    seconds: float
    reasons: dict[int, str] = field(default_factory=dict)  # rejected row index -> reason

    @property
    def rejected(self) -> int:
        return self.rows - self.train - self.held_out

    def stage(self, name: str) -> StageCount:
        return next(stage for stage in self.stages if stage.name == name)

    def table(self) -> Table:
        table = Table(title="yield per stage")
        for column in ("stage", "in", "rejected", "out"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for stage in self.stages:
            table.add_row(stage.name, f"{stage.seen:,}", f"{stage.rejected:,}", f"{stage.kept:,}")
        return table

    def summary(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.train + self.held_out} of {self.rows} rows kept: {self.train} train in {self.out}, "
            f"{self.held_out} held out in {self.held_out_path}; {self.rejected} rejected in "
            f"{self.rejected_path}; {rate:,.0f} rows/s"
        )


def held_out_file(out: Path) -> Path:
    return out.with_name(out.stem + ".held_out.jsonl")


def _paths(cfg: DataFilterConfig) -> tuple[Path, Path, Path, Path]:
    for name, value in (("IN.jsonl (the rows to filter)", cfg.input), ("--out", cfg.out)):
        if not value:
            raise RewardlabError(f"data filter needs {name}")
    source, out = Path(cfg.input), Path(cfg.out)
    written = (out, held_out_file(out), rejected_path(out))
    read = [source, *(Path(name) for name in cfg.contamination)]
    clash = next((path for path in written if any(path.resolve() == other.resolve() for other in read)), None)
    if clash is not None:
        raise RewardlabError(f"data filter would write over its own input {clash}: choose another --out")
    return (source, *written)


def filter_rows(cfg: DataFilterConfig) -> FilterResult:
    """Filter ``cfg.input`` into ``cfg.out`` and the files beside it; see the module's docstring."""
    source, out, held_out_path, rejected_file = _paths(cfg)
    rows = [Row(i, line, data) for i, (_, line, data) in enumerate(read_rows(source, "input"))]
    stages = build_stages(cfg)
    started = time.perf_counter()
    alive, counts, rejections = rows, [], {}
    with progress("filtering rows", total=len(rows) * len(stages)) as advance:
        for stage in stages:
            advance(len(rows) - len(alive))  # the rows earlier stages took out count as done here
            found = stage.run(alive, functools.partial(advance, stage=stage.name))
            counts.append(StageCount(stage.name, len(alive), len(found)))
            rejections.update((index, (stage.name, problem)) for index, problem in found.items())
            alive = [row for row in alive if row.index not in found]
    held = [row for row in alive if held_out_position(row.text) < cfg.held_out]
    train = [row for row in alive if held_out_position(row.text) >= cfg.held_out]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, _lines(row.line for row in train))
    atomic.write_text(held_out_path, _lines(row.line for row in held))
    atomic.write_text(
        rejected_file, _lines(_rejected_line(rows[i], *rejections[i]) for i in sorted(rejections))
    )
    return FilterResult(
        out, held_out_path, rejected_file, len(rows), counts, len(train), len(held),
        time.perf_counter() - started, {i: problem.reason for i, (_, problem) in rejections.items()},
    )  # fmt: skip


def _lines(lines: Iterable[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _rejected_line(row: Row, stage: str, problem: Rejection) -> str:
    entry = {"index": row.index, "stage": stage, "reason": problem.reason, "message": problem.message}
    entry["row"] = row.data
    return json.dumps(entry, ensure_ascii=False, default=repr)
