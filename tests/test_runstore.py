"""The run store against a real SQLite file in a temporary directory: no mocks."""

from __future__ import annotations

import io
import json
import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from rewardlab.errors import RewardlabError
from rewardlab.runs import Run, RunStore, collect_manifest
from rewardlab.runs.store import json_dumps
from rewardlab.runs.view import run_details, runs_table
from rewardlab.types import Example, Rollout, ScoredRollout

MANIFEST = {"seed": 0}  # skip the git probe in tests that do not look at the manifest


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def _scored(errored: bool = False) -> ScoredRollout:
    example = Example(
        id="gsm8k-17",
        prompt=[{"role": "system", "content": "Think."}, {"role": "user", "content": "2+2?"}],
        answer="4",
        info={"split": "test", "difficulty": np.int64(3)},
    )
    rollout = Rollout(
        example=example,
        sample_index=2,
        completion=[{"role": "assistant", "content": "<answer>4</answer>"}],
        completion_ids=[5, 6, 7],
        completion_mask=[1, 1, 1],
        truncated=True,
        num_turns=1,
        latency_s=0.25,
    )
    components: dict[str, float | None] = {"correct": 1.0, "format": np.float32(0.5)}
    errors: dict[str, str] = {}
    if errored:
        components["judge"] = None
        errors["judge"] = "TimeoutError: judge did not answer"
    return ScoredRollout(rollout, reward=np.float64(1.5), components=components, errors=errors)


def test_create_writes_dir_files_and_row(store: RunStore) -> None:
    run = store.create_run(
        "train", {"lr": 1e-5, "out": Path("x/y"), "tags": {"b", "a"}}, MANIFEST, name="first"
    )
    assert re.fullmatch(r"train-\d{8}-\d{6}-[0-9a-f]{4}", run.id)
    assert run.dir == store.root / run.id and run.dir.is_dir()
    assert run.status == "running" and run.finished_at is None and run.name == "first"
    assert json.loads((run.dir / "config.json").read_text()) == {"lr": 1e-5, "out": "x/y", "tags": ["a", "b"]}
    assert json.loads((run.dir / "manifest.json").read_text()) == MANIFEST
    assert (store.root / "rewardlab.db").exists()
    assert run.config["out"] == "x/y"


def test_create_with_explicit_id_and_duplicate(store: RunStore) -> None:
    run = store.create_run("eval", {}, MANIFEST, run_id="eval-fixed", parent="train-x")
    assert run.id == "eval-fixed" and run.parent == "train-x"
    with pytest.raises(RewardlabError, match="already exists"):
        store.create_run("eval", {}, MANIFEST, run_id="eval-fixed")
    with pytest.raises(RewardlabError):
        store.create_run("bad/kind", {}, MANIFEST)


def test_get_by_id_prefix_dir_and_name(store: RunStore) -> None:
    a = store.create_run("train", {}, MANIFEST, run_id="train-aaa1", name="baseline")
    store.create_run("train", {}, MANIFEST, run_id="train-bbb2")
    assert store.get(a.id).id == a.id
    assert store.get("train-a").id == a.id
    assert store.get(a.dir).id == a.id
    assert store.get(str(a.dir) + "/").id == a.id
    assert store.get("baseline").id == a.id


def test_unknown_and_ambiguous_errors_are_one_line(store: RunStore) -> None:
    ids = [store.create_run("eval", {}, MANIFEST, run_id=f"eval-{i}").id for i in range(7)]
    with pytest.raises(RewardlabError) as unknown:
        store.get("xyz")
    assert str(unknown.value) == f"no run 'xyz' in {store.root / 'rewardlab.db'}"
    with pytest.raises(RewardlabError) as ambiguous:
        store.get("eval")
    message = str(ambiguous.value)
    assert "\n" not in message
    assert message.startswith(f"run 'eval' is ambiguous in {store.root / 'rewardlab.db'}: matches ")
    assert message.endswith(" and 2 more")
    assert sum(run_id in message for run_id in ids) == 5


def test_get_on_missing_database_does_not_create_it(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "nothing")
    assert store.list() == []
    with pytest.raises(RewardlabError, match=r"^no run 'x' in .*rewardlab\.db$"):
        store.get("x")
    assert not (tmp_path / "nothing").exists()


def test_metrics_round_trip_and_ordering(store: RunStore) -> None:
    run = store.create_run("train", {}, MANIFEST)
    store.log_metrics(run.id, 10, {"loss": np.float32(0.5), "reward": 0.25, "skipped": None})
    store.log_metrics(run.id, 2, {"loss": 1.0})
    store.log_metrics(run.id, 5, {"loss": float("nan"), "reward": 0.1})
    store.log_metrics(run, 2, {"loss": 0.9})  # same step again: overwrites
    series = store.metrics(run.id)
    assert set(series) == {"loss", "reward"}
    assert [step for step, _ in series["loss"]] == [2, 5, 10]
    assert series["loss"][0] == (2, 0.9) and series["loss"][2] == (10, 0.5)
    assert math.isnan(series["loss"][1][1])
    table = store.metric_table(run.id)
    assert [row["step"] for row in table] == [2, 5, 10]
    assert table[0] == {"step": 2, "loss": 0.9, "reward": None}
    assert table[2]["reward"] == 0.25
    with pytest.raises(TypeError, match="not a number"):
        store.log_metrics(run.id, 1, {"loss": "high"})
    with pytest.raises(RewardlabError, match="no run 'nope'"):
        store.log_metrics("nope", 1, {"loss": 1.0})


def test_metrics_accept_torch_scalars(store: RunStore) -> None:
    torch = pytest.importorskip("torch")
    run = store.create_run("train", {}, MANIFEST)
    store.log_metrics(run.id, 0, {"loss": torch.tensor(2.5)})
    assert store.metrics(run.id) == {"loss": [(0, 2.5)]}


def test_rollouts_round_trip_with_errored_component(store: RunStore) -> None:
    run = store.create_run("eval", {}, MANIFEST)
    store.log_rollouts(run.id, 0, "eval", [_scored(errored=True), _scored()])
    store.log_rollouts(run.id, 3, "train", [_scored()])
    rows = store.rollouts(run.id, phase="eval")
    assert len(rows) == 2 and len(store.rollouts(run.id)) == 3
    assert len(store.rollouts(run.id, step=3)) == 1 and store.rollouts(run.id, phase="eval", step=3) == []
    row = rows[0]
    assert row["components"] == {"correct": 1.0, "format": 0.5, "judge": None}
    assert row["errors"] == {"judge": "TimeoutError: judge did not answer"}
    assert row["prompt"][1] == {"role": "user", "content": "2+2?"}
    assert row["completion"] == [{"role": "assistant", "content": "<answer>4</answer>"}]
    assert (row["example_id"], row["sample_index"], row["answer"]) == ("gsm8k-17", 2, "4")
    assert row["reward"] == 1.5 and row["metrics"] == {}
    assert row["truncated"] is True and row["num_turns"] == 1 and row["num_completion_tokens"] == 3
    assert row["latency_s"] == 0.25 and row["info"] == {"split": "test", "difficulty": 3}
    assert row["error"] is None and rows[1]["errors"] == {}
    assert store.rollout_counts(run.id) == {"eval": 2, "train": 1}


def test_rollout_metrics_written_by_earlier_versions_still_read(store: RunStore) -> None:
    """Rollouts no longer carry metrics, but a store whose rows have them reads as before."""
    import sqlite3

    run = store.create_run("eval", {}, MANIFEST)
    store.log_rollouts(run.id, 0, "eval", [_scored()])
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("UPDATE rollouts SET metrics = ? WHERE run_id = ?", ('{"length": 3.0}', run.id))
    [row] = store.rollouts(run.id)
    assert row["metrics"] == {"length": 3.0} and row["components"]["correct"] == 1.0


def test_finish_and_summary_merge(store: RunStore) -> None:
    run = store.create_run("train", {}, MANIFEST)
    store.update_summary(run.id, {"steps": 10, "mean_reward": 0.1})
    store.set_status(run.id, "interrupted")
    assert store.get(run.id).status == "interrupted"
    store.finish(run.id, summary={"mean_reward": np.float64(0.75), "best": {"step": 7}})
    done = store.get(run.id)
    assert done.status == "completed" and done.finished_at is not None
    assert done.duration_s is not None and done.duration_s >= 0
    assert done.summary == {"steps": 10, "mean_reward": 0.75, "best": {"step": 7}}
    assert not (run.dir / "summary.json").exists()
    store.finish(run.id, status="failed")
    assert store.get(run.id).summary["steps"] == 10


def test_list_newest_first_with_kind_filter_and_limit(store: RunStore) -> None:
    made = [store.create_run(kind, {}, MANIFEST) for kind in ("train", "eval", "train", "demo")]
    listed = store.list()
    assert [r.id for r in listed] == [r.id for r in reversed(made)]
    assert [r.id for r in store.list(kind="train")] == [made[2].id, made[0].id]
    assert [r.id for r in store.list(limit=2)] == [made[3].id, made[2].id]
    assert all(isinstance(r, Run) for r in listed)


def test_second_instance_sees_data_and_concurrent_writers(store: RunStore) -> None:
    run = store.create_run("train", {"model": "tiny"}, MANIFEST)
    store.log_metrics(run.id, 1, {"loss": 2.0})

    def writer(offset: int) -> None:
        with RunStore(store.root) as other:
            for step in range(25):
                other.log_metrics(run.id, offset + step, {"loss": float(step)})

    threads = [threading.Thread(target=writer, args=(100 * i,)) for i in range(1, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    reopened = RunStore(store.root)
    assert reopened.get(run.id).config == {"model": "tiny"}
    assert len(reopened.metrics(run.id)["loss"]) == 1 + 3 * 25
    assert reopened._query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"] == "1"
    assert reopened._query("PRAGMA journal_mode")[0][0] == "wal"


def test_json_helper_handles_awkward_values() -> None:
    payload = {
        "p": Path("a/b"),
        "s": {3, 1},
        "n": np.int32(4),
        "arr": np.arange(2),
        np.int64(5): "k",
        "ex": Example(id="e", prompt=[]),
        "obj": object(),
    }
    decoded = json.loads(json_dumps(payload))
    assert decoded["p"] == "a/b" and decoded["s"] == [1, 3] and decoded["n"] == 4 and decoded["arr"] == [0, 1]
    assert decoded["5"] == "k" and decoded["ex"]["id"] == "e" and decoded["obj"].startswith("<object")


def test_manifest_keys_and_versions() -> None:
    start = time.perf_counter()
    manifest = collect_manifest(seed=7, extra={"note": "hi"})
    assert time.perf_counter() - start < 2.0  # generous bound; typically well under 0.1 s
    for key in (
        "python",
        "platform",
        "hostname",
        "packages",
        "git",
        "command",
        "seed",
        "hardware",
        "timestamp",
    ):
        assert key in manifest
    assert manifest["seed"] == 7 and manifest["note"] == "hi"
    packages = manifest["packages"]
    assert set(packages) >= {
        "rewardlab",
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "datasets",
        "numpy",
        "tokenizers",
    }
    assert re.match(r"^\d+\.\d+", packages["torch"])
    assert set(manifest["git"]) == {"commit", "dirty"}
    assert manifest["hardware"]["cpu_count"] >= 1
    json.dumps(manifest)  # storable as is


def test_manifest_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert collect_manifest()["git"] == {"commit": None, "dirty": None}


def test_views_render_with_run_id(store: RunStore) -> None:
    run = store.create_run(
        "train",
        {"model": {"name": "tiny", "lora": {"r": 8}}, "lr": 1e-5, "tag": "[bold]"},
        collect_manifest(seed=3),
    )
    store.log_metrics(run.id, 1, {"loss": 1.0, "reward": 0.2})
    store.log_rollouts(run.id, 1, "train", [_scored(errored=True)])
    store.finish(run.id, summary={"mean_reward": 0.42, "eval": {"accuracy": 0.5}})
    running = store.create_run("eval", {}, MANIFEST)
    console = Console(file=io.StringIO(), width=120)
    console.print(runs_table(store.list()))
    console.print(run_details(store, store.get(run.id)))
    console.print(run_details(store, running))
    out = console.file.getvalue()
    assert run.id in out and running.id in out
    assert "mean_reward=0.42" in out and "[bold]" in out and "lora" in out


def test_resume_truncates_later_steps_and_reopens(store: RunStore) -> None:
    run = store.create_run("train", {}, MANIFEST)
    for step in (1, 2, 3):
        store.log_metrics(run.id, step, {"loss": float(step)})
        store.log_rollouts(run.id, step, "train", [_scored()])
    store.set_status(run.id, "interrupted")
    assert store.truncate_metrics(run.id, after_step=1) == 4
    assert store.metrics(run.id) == {"loss": [(1, 1.0)]}
    assert [row["step"] for row in store.rollouts(run.id)] == [1]
    store.finish(run.id)
    store.set_status(run.id, "running")
    resumed = store.get(run.id)
    assert resumed.status == "running" and resumed.finished_at is None
