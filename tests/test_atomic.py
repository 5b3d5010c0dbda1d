"""Writes a crash cannot leave half done: files and directories are replaced whole, or left as they were."""

import errno
import os

import pytest

from conftest import record_fsyncs
from rewardlab import atomic
from rewardlab.runs import RunStore


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_file_is_replaced_whole_and_flushed(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("old")
    flushed = record_fsyncs(monkeypatch)
    atomic.write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert flushed[0].startswith(str(tmp_path / ".summary.json.tmp-"))  # the data, before the rename
    assert flushed[-1] == str(tmp_path)  # the rename
    assert os.listdir(tmp_path) == ["summary.json"]


def test_a_failed_file_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]


def test_a_directory_is_replaced_whole_or_left_as_it_was(tmp_path):
    target = tmp_path / "final"
    with atomic.replacing_directory(target) as partial:
        (partial / "weights").write_text("one")
    assert (target / "weights").read_text() == "one"

    with pytest.raises(RuntimeError), atomic.replacing_directory(target) as partial:
        (partial / "weights").write_text("half")
        raise RuntimeError("died while writing")
    assert (target / "weights").read_text() == "one"
    assert os.listdir(tmp_path) == ["final"]

    with atomic.replacing_directory(target) as partial:
        (partial / "weights").write_text("two")
    assert os.listdir(target) == ["weights"] and (target / "weights").read_text() == "two"
    assert os.listdir(tmp_path) == ["final"]


def test_temporaries_left_by_a_crash_are_removed(tmp_path):
    (tmp_path / ".step-000003.tmp-123").mkdir()
    (tmp_path / ".summary.json.tmp-123").write_text("half")
    (tmp_path / "step-000002").mkdir()
    (tmp_path / ".hidden").write_text("not ours")
    removed = atomic.remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".step-000003.tmp-123", ".summary.json.tmp-123"]
    assert sorted(os.listdir(tmp_path)) == [".hidden", "step-000002"]


def test_run_files_and_summaries_are_written_atomically(tmp_path, monkeypatch):
    """What a run writes beside the database (config, manifest, summary, results, report) goes through
    :func:`atomic.write_text`."""
    from rewardlab.config import EvalConfig, validated
    from rewardlab.eval.evaluate import evaluate

    written = []
    real_write_text = atomic.write_text

    def recorded(path, text, encoding="utf-8"):
        written.append(os.path.basename(path))
        real_write_text(path, text, encoding)

    monkeypatch.setattr(atomic, "write_text", recorded)
    store = RunStore(tmp_path / "runs")
    config = validated(
        EvalConfig,
        {
            "model": {"name_or_path": "scripted:oracle"},
            "env": {"name": "arithmetic"},
            "num_examples": 2,
            "rollouts_per_example": 1,
            "runs_dir": str(tmp_path / "runs"),
        },
    )
    result = evaluate(config, store)
    assert {"config.json", "manifest.json", "summary.json", "results.jsonl", "report.md"} <= set(written)
    assert (result.run_dir / "summary.json").exists() and (result.run_dir / "report.md").exists()
