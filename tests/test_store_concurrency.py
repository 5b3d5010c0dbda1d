"""The run store with real processes: two runs logging at once and a reader listing them, never "database is
locked"."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rewardlab
from rewardlab.errors import RewardlabError
from rewardlab.runs import RunStore, store

WRITER = """
import sys, time
from rewardlab.runs import RunStore
root, name, steps, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))
store = RunStore(root)
run = store.create_run("train", {"name": name}, {}, name=name)
for step in range(1, steps + 1):
    store.log_metrics(run.id, step, {"loss": 1.0 / step, "reward/mean": step / steps})
    if step % 25 == 0:
        store.update_summary(run.id, {"last_step": step})
store.finish(run.id, summary={"steps": steps})
"""

READER = """
import os, sys, time
from rewardlab.runs import RunStore
root, start, stop = sys.argv[1], float(sys.argv[2]), sys.argv[3]
time.sleep(max(0.0, start - time.time()))
reads = 0
while not os.path.exists(stop):  # until the writers are done
    for run in RunStore(root).list():  # a fresh connection each time, as a CLI would open
        RunStore(root).metrics(run.id)
    reads += 1
print(reads)
"""

HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""

STEPS = 300


def child_env() -> dict:
    source = str(Path(next(iter(rewardlab.__path__))).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return env


def python(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("round_", range(3))
def test_two_writers_and_readers_in_other_processes_never_see_a_locked_database(tmp_path, round_):
    root = tmp_path / "runs"  # a fresh store each round: both writers create it at the same moment
    start = time.time() + 1.0
    workers = [python(WRITER, root, name, STEPS, start) for name in ("first", "second")]
    stop = tmp_path / "writers-done"
    workers.append(python(READER, root, start, stop))
    listings = 0
    while any(worker.poll() is None for worker in workers[:2]):  # the command line reads meanwhile
        if time.time() >= start:
            listed = subprocess.run(
                [sys.executable, "-m", "rewardlab.cli", "runs", "list", "--runs-dir", str(root)],
                env=child_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert listed.returncode == 0 and not listed.stderr, listed.stderr
            listings += 1
        else:
            time.sleep(0.05)
    stop.touch()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "locked" not in err
    runs = RunStore(root).list()
    assert sorted(run.name for run in runs) == ["first", "second"]
    for run in runs:
        assert run.status == "completed" and run.summary == {"last_step": STEPS, "steps": STEPS}
        assert [step for step, _ in RunStore(root).metrics(run.id)["loss"]] == list(range(1, STEPS + 1))
    assert int(outputs[2][0]) >= 1 and listings >= 1


def holding_the_write_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process creating the database: it holds the write lock before WAL is switched on."""
    db.parent.mkdir(parents=True, exist_ok=True)
    holder = python(HOLDER, db, seconds)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_store_opened_while_another_process_creates_it_waits_for_it(tmp_path):
    root = tmp_path / "runs"
    holder = holding_the_write_lock(root / store.DB_NAME, 1.0)
    started = time.monotonic()
    run = RunStore(root).create_run("train", {}, {})  # SQLite alone answers "database is locked" at once
    assert time.monotonic() - started >= 0.5
    assert holder.wait(timeout=60) == 0
    assert RunStore(root).get(run.id).status == "running"


def test_a_lock_held_past_the_busy_timeout_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.3)
    root = tmp_path / "runs"
    holder = holding_the_write_lock(root / store.DB_NAME, 3.0)
    try:
        with pytest.raises(RewardlabError) as caught:
            RunStore(root).create_run("train", {}, {})
    finally:
        holder.kill()
        holder.wait()
    db = root / store.DB_NAME
    assert str(caught.value) == f"the run store {db} stayed locked for 0.3 s by another process"
