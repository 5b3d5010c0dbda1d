"""Whether evaluation records were in a model's training data, judged by content.

A record is its question (the user turns, whitespace-normalised: no system prompt, no chat template) and
its answer. Two checks:

* **exact**: the SHA-1 of question and answer, so the same problem under another system prompt or prompt
  style is still the same problem;
* **near**: a record with the same answer as a training record and a question whose word 3-grams have an
  estimated Jaccard similarity of :data:`NEAR_JACCARD` or more with that record's (MinHash signatures): a log
  with one number changed, a maze with one wall moved. The answer must match because some environments ask
  every example the same question (Wordle's secret is only in the answer).

Every SFT and train run writes both for its training records (:func:`record_training_data`); a model with
no run history has nothing to check against, which is "unchecked", never "0 seen".
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rewardlab.types import Messages

HASHES_FILE = "training_prompt_hashes.txt"
LEGACY_HASHES_FILE = "training_prompts.txt"
SIGNATURES_FILE = "training_minhash.npz"
HASHES_HEADER = (
    "# content v2: a line per record this run trained on, the first 16 hex digits of the SHA-1 of its\n"
    "# question (user turns, whitespace-normalised) and answer. rewardlab compare reads it to find\n"
    "# evaluation records that were in a model's training data.\n"
)
NEAR_JACCARD = 0.8  # estimated Jaccard similarity of word 3-grams at which a record is a near-duplicate
SHINGLE = 3  # words per shingle
_MIX = (1, 1_000_003, 998_244_353)
PERMUTATIONS = 64
_PRIME = (1 << 31) - 1
_RNG = np.random.default_rng(20261202)  # fixed: signatures written by one run are read by another
_A = _RNG.integers(1, _PRIME, PERMUTATIONS, dtype=np.uint64)
_B = _RNG.integers(0, _PRIME, PERMUTATIONS, dtype=np.uint64)


def _normalised(text: str) -> str:
    return " ".join(text.split())


def question_text(prompt: Messages | str) -> str:
    """The question a record asks: its user turns, whitespace-normalised (no system prompt, no template)."""
    if isinstance(prompt, str):
        return _normalised(prompt)
    return _normalised("\n".join(m.get("content") or "" for m in prompt if m.get("role") == "user"))


def record_text(prompt: Messages | str, answer: str | None) -> str:
    return question_text(prompt) + "\n" + _normalised(answer or "")


def _text_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def content_hash(prompt: Messages | str, answer: str | None) -> str:
    return _text_hash(record_text(prompt, answer))


def signature(text: str) -> np.ndarray:
    """The MinHash signature (PERMUTATIONS values) of ``text``'s word 3-grams."""
    words = text.split() or [""]
    words += [""] * (SHINGLE - len(words))
    ids = np.array([zlib.crc32(word.encode()) for word in words], dtype=np.uint64)
    # Each 3-gram as one integer (wrapping arithmetic: deterministic), reduced into the permutations' field.
    grams = sum(ids[i : ids.size - SHINGLE + 1 + i] * np.uint64(_MIX[i]) for i in range(SHINGLE))
    grams = np.unique(grams % np.uint64(_PRIME))
    return ((grams[:, None] * _A + _B) % np.uint64(_PRIME)).min(axis=0).astype(np.uint32)


def signatures(texts: Iterable[str]) -> np.ndarray:
    rows = [signature(text) for text in texts]
    return np.stack(rows) if rows else np.zeros((0, PERMUTATIONS), dtype=np.uint32)


def answer_key(answer: str | None) -> int:
    """A record's answer as a number (0: unknown, which any answer matches)."""
    if answer is None:
        return 0
    return int(hashlib.sha1(_normalised(answer).encode()).hexdigest()[:15], 16) + 1


def record_training_data(run_dir: Path, records: Iterable[tuple[Messages | str, str | None]]) -> Path:
    """Write the content hashes and MinHash signatures of the ``(prompt, answer)`` records a run trains on
    (``answer`` None when the data has none, as a JSONL of prompts and completions)."""
    unique = {record_text(prompt, answer): (question_text(prompt), answer) for prompt, answer in records}
    path = Path(run_dir) / HASHES_FILE
    hashes = sorted({_text_hash(text) for text in unique})
    path.write_text(HASHES_HEADER + "\n".join(hashes) + "\n")
    np.savez_compressed(
        Path(run_dir) / SIGNATURES_FILE,
        signatures=signatures(question for question, _ in unique.values()),
        answers=np.array([answer_key(answer) for _, answer in unique.values()], dtype=np.uint64),
    )
    return path


@dataclass
class Overlap:
    """Evaluation records found in a model's training data: ``checked`` False when the model has no run
    history to check against (counts are then None)."""

    checked: bool
    records: int
    exact: int | None = None
    near: int | None = None  # near-duplicates that are not exact copies

    def describe(self, label: str) -> str:
        if not self.checked:
            return f"{label}: unchecked (no rewardlab training history to compare with)"
        return (
            f"{label}: {self.exact} of {self.records} records seen in training, {self.near} more "
            f"near-duplicates (word 3-gram Jaccard >= {NEAR_JACCARD})"
        )


@dataclass
class TrainingData:
    """What a model's lineage trained on: content hashes (and older runs' whole-prompt hashes), and each
    training record's question signature and answer key."""

    hashes: set[str]
    signatures: np.ndarray
    answers: np.ndarray | None = None  # answer_key per signature row; None: unknown for every row

    def check(self, records: list[tuple[Messages | str, str | None]]) -> Overlap:
        from rewardlab.runs.lineage import prompt_hash  # the whole-prompt hash older runs wrote

        exact = [
            content_hash(prompt, answer) in self.hashes
            or content_hash(prompt, None) in self.hashes
            or (not isinstance(prompt, str) and prompt_hash(prompt) in self.hashes)
            for prompt, answer in records
        ]
        near = 0
        if self.signatures.size:
            answers = self.answers if self.answers is not None else np.zeros(len(self.signatures), np.uint64)
            unseen = [record for record, seen in zip(records, exact, strict=True) if not seen]
            rows = signatures(question_text(prompt) for prompt, _ in unseen)
            for row, (_, answer) in zip(rows, unseen, strict=True):
                same_answer = (answers == answer_key(answer)) | (answers == 0)
                if same_answer.any():
                    similarity = (self.signatures[same_answer] == row).mean(axis=1).max()
                    near += bool(similarity >= NEAR_JACCARD)
        return Overlap(True, len(records), sum(exact), near)


def training_data(run_dirs: list[Path]) -> TrainingData | None:
    """The training records of ``run_dirs`` (a model's lineage), or None when there is no run to read."""
    if not run_dirs:
        return None
    hashes: set[str] = set()
    rows, answers = [], []
    for run_dir in run_dirs:
        for path in (run_dir / HASHES_FILE, run_dir / LEGACY_HASHES_FILE):
            if path.exists():
                lines = (line.strip() for line in path.read_text().splitlines())
                hashes.update(line for line in lines if line and not line.startswith("#"))
        if (run_dir / SIGNATURES_FILE).exists():
            with np.load(run_dir / SIGNATURES_FILE) as saved:
                rows.append(saved["signatures"])
                answers.append(saved["answers"])
    if not rows:
        return TrainingData(hashes, np.zeros((0, PERMUTATIONS), dtype=np.uint32))
    return TrainingData(hashes, np.concatenate(rows), np.concatenate(answers))
