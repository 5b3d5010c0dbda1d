"""The dashboard's API through FastAPI's TestClient: thinned curves keep their extremes and alerts, rollouts
are paged in SQL, lineage goes both ways, an unknown run is a JSON 404, the command's mistakes are 1 line."""

import json
import math
import shutil
import socket

import pytest
from fastapi.testclient import TestClient

from conftest import user_error
from rewardlab.config import DashboardConfig
from rewardlab.dashboard import downsample, queries, vendor
from rewardlab.dashboard.app import create_app, serve_dashboard
from rewardlab.errors import RewardlabError
from rewardlab.runs import RunStore
from rewardlab.types import Example, Rollout, ScoredRollout


def scored(example_id, completion, reward, components, answer="4", sample=0, errors=None):
    example = Example(example_id, [{"role": "user", "content": f"question {example_id}"}], answer)
    rollout = Rollout(
        example, sample, completion, num_turns=sum(m["role"] == "assistant" for m in completion)
    )
    return ScoredRollout(rollout, reward, components, errors or {})


def said(text):
    return [{"role": "assistant", "content": text}]


# ------------------------------------------------------------------------------------------- downsample


def test_thinning_keeps_every_spike_dip_and_both_ends(tmp_path):
    store = RunStore(tmp_path)
    run = store.create_run("train", {}, manifest={})
    values = {step: math.sin(step / 50) for step in range(5000)}
    values.update({1234: 40.0, 3210: -40.0, 2000: math.nan, 4321: math.inf})  # spike, collapse, gap, overflow
    with store._transaction() as conn:
        conn.executemany(
            "INSERT INTO metrics VALUES (?, ?, 'x', ?)", [(run.id, s, v) for s, v in values.items()]
        )
        conn.executemany(
            "INSERT INTO metrics VALUES (?, ?, 'short', ?)", [(run.id, s, 1.0) for s in range(9)]
        )
        conn.execute("INSERT INTO metrics VALUES (?, 9, 'short', NULL)", (run.id,))
    thinned = downsample.thinned(store, run.id, store.metric_spans(run.id), 1000)
    series = thinned["x"]
    assert 900 < len(series) <= 1000
    kept = dict(series)
    assert kept[1234] == 40.0 and kept[3210] == -40.0 and kept[4321] == 1.7976931348623157e308
    assert series[0] == (0, 0.0) and series[-1][0] == 4999
    assert [step for step, _ in series] == sorted(kept)
    assert all(value == values[step] for step, value in series if value is not None and step != 4321)
    # Each run of 11 steps (5,000 steps in (1000 - 4) // 2 = 498 runs) keeps its lowest and highest value.
    buckets = {}
    for step, value in values.items():
        if not math.isnan(value):
            buckets.setdefault(step // 11, []).append(min(value, 1.7976931348623157e308))
    for bucket, raw in buckets.items():
        shown = [value for step, value in series if step // 11 == bucket and value is not None]
        assert min(shown) == min(raw) and max(shown) == max(raw), bucket
    assert thinned["short"] == [*[(step, 1.0) for step in range(9)], (9, None)]  # short: whole, NaN a gap


# ------------------------------------------------------------------------------------------- API


@pytest.fixture()
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def client_for(store):
    return TestClient(create_app(store.root))


def test_an_unknown_run_is_a_json_404_on_every_route(store):
    store.create_run("eval", {}, manifest={})
    client = client_for(store)
    for path in ("runs/nope", "runs/nope/curves", "runs/nope/rollouts", "runs/nope/eval", "runs/nope/audit",
                 "runs/nope/compare", "compare?a=nope&b=nope"):  # fmt: skip
        response = client.get(f"/api/{path}")
        assert response.status_code == 404, path
        assert "no run 'nope'" in response.json()["error"]
    assert client.get("/api/nothing/here").status_code == 404
    assert client.get("/api/nothing/here").json() == {"error": "no API route /api/nothing/here"}


def test_rollouts_are_paged_in_sql_and_filtered_by_phase_and_step(store):
    run = store.create_run("train", {}, manifest={})
    for step in (1, 2, 3):
        store.log_rollouts(
            run.id, step, "train", [scored(f"s{step}-{i}", said(str(i)), 0.5, {}) for i in range(10)]
        )
    store.log_rollouts(run.id, 3, "eval", [scored("e", said("x"), 1.0, {})])
    client = client_for(store)
    seen = []
    for page in (1, 2, 3, 4, 5):
        body = client.get(
            f"/api/runs/{run.id}/rollouts", params={"phase": "train", "page": page, "per_page": 7}
        ).json()
        assert body["total"] == 30 and body["pages"] == 5 and body["page"] == page
        seen += [row["example_id"] for row in body["rollouts"]]
    assert seen == [f"s{step}-{i}" for step in (1, 2, 3) for i in range(10)]  # each once, in logging order
    body = client.get(f"/api/runs/{run.id}/rollouts", params={"step": 3, "per_page": 50}).json()
    assert body["total"] == 11 and {row["phase"] for row in body["rollouts"]} == {"train", "eval"}
    assert body["phases"] == {"eval": 1, "train": 30} and body["steps"] == [1, 2, 3]
    past_the_end = client.get(f"/api/runs/{run.id}/rollouts", params={"page": 99, "per_page": 10}).json()
    assert past_the_end["page"] == 4 and len(past_the_end["rollouts"]) == 1
    assert client.get(f"/api/runs/{run.id}/rollouts", params={"per_page": 1000}).status_code == 422


def test_a_transcript_tells_the_environment_from_the_model_and_carries_token_statistics(store):
    run = store.create_run("eval", {}, manifest={})
    conversation = [
        {"role": "assistant", "content": "<guess>crane</guess>"},
        {"role": "user", "content": "crane  - Y - - G"},
        {"role": "assistant", "content": "<guess>shine</guess>"},
    ]
    store.log_rollouts(run.id, 0, "eval", [scored("w", conversation, 0.2, {"solved": 0.0})])
    tokens = [[{"text": "<guess>", "logprob": -0.01, "entropy": 0.1}, {"text": "crane", "logprob": -2.5}],
              [{"text": "shine", "logprob": -0.3, "entropy": 1.9}]]  # fmt: skip
    with store._transaction() as conn:  # a rollout stored with per-token statistics
        conn.execute("UPDATE rollouts SET metrics = ?", (json.dumps({"tokens": tokens}),))
    [row] = client_for(store).get(f"/api/runs/{run.id}/rollouts").json()["rollouts"]
    assert [turn["who"] for turn in row["transcript"]] == ["prompt", "model", "environment", "model"]
    assert row["transcript"][2]["content"] == "crane  - Y - - G" and "tokens" not in row["transcript"][2]
    assert row["transcript"][1]["tokens"][1] == {"text": "crane", "logprob": -2.5, "entropy": None}
    assert row["transcript"][3]["tokens"][0]["entropy"] == 1.9
    assert row["question"] == "question w" and row["num_turns"] == 2


def test_lineage_goes_both_ways(store):
    demo = store.create_run("demo", {"model": {"name_or_path": "tiny"}}, manifest={})
    sft = store.create_run("sft", {"model": {"name_or_path": "tiny"}, "env": {"name": "arithmetic"}},
                           manifest={}, parent=demo.id)  # fmt: skip
    trained = store.create_run("train", {"model": {"name_or_path": str(sft.dir / "model")}}, manifest={},
                               parent=demo.id)  # fmt: skip
    evaluated = store.create_run("eval", {"model": {"name_or_path": str(trained.dir)}}, manifest={})
    by_id = store.create_run("eval", {"model": {"name_or_path": trained.id}}, manifest={})
    compared = store.create_run("compare", {"a": str(sft.dir / "model"), "b": str(trained.dir)}, manifest={})
    client = client_for(store)
    rows = {row["id"]: row for row in client.get("/api/runs").json()["runs"]}
    assert rows[demo.id]["children"] == [trained.id, sft.id]  # newest first
    assert rows[trained.id]["parent"] == demo.id and rows[trained.id]["model_from"] == [sft.id]
    assert set(rows[trained.id]["used_by"]) == {evaluated.id, by_id.id, compared.id}
    assert rows[compared.id]["model_from"] == [sft.id, trained.id]
    assert rows[trained.id]["model"] == f"{sft.id}/model" and rows[evaluated.id]["model"] == trained.id
    detail = client.get(f"/api/runs/{evaluated.id}").json()
    assert detail["ancestors"] == [trained.id, sft.id] and detail["pages"] == ["eval", "rollouts"]
    assert "config.json" in detail["files"]
    assert [r["id"] for r in client.get("/api/runs", params={"kind": "eval"}).json()["runs"]] == [
        by_id.id, evaluated.id]  # fmt: skip
    assert [r["id"] for r in client.get("/api/runs", params={"q": "ARITH"}).json()["runs"]] == [sft.id]
    store.finish(sft.id)
    assert [r["id"] for r in client.get("/api/runs", params={"status": "completed"}).json()["runs"]] == [
        sft.id
    ]


def test_curves_are_thinned_on_the_server_with_every_alert_kept(store):
    run = store.create_run("train", {}, manifest={})
    with store._transaction() as conn:  # 5,000 steps written at once
        rows = [
            (run.id, step, name, value)
            for step in range(1, 5001)
            for name, value in (("reward/mean", step / 5000), ("reward/correct", 0.5), ("entropy", 2.0))
        ]
        rows[3 * 2499 + 2] = (run.id, 2500, "entropy", 0.01)  # the collapse
        rows += [(run.id, 2500, "alerts/entropy_collapse", 1.0), (run.id, 4000, "alerts/no_signal", 1.0)]
        rows += [(run.id, step, "time/step_seconds", 1.5) for step in (1, 2, 3)]
        conn.executemany("INSERT INTO metrics (run_id, step, name, value) VALUES (?, ?, ?, ?)", rows)
    store.update_summary(run.id, {"alerts": [{"name": "entropy_collapse", "step": 2500, "message": "low",
                                              "action": "warn"}]})  # fmt: skip
    body = client_for(store).get(f"/api/runs/{run.id}/curves").json()
    entropy = body["series"]["entropy"]
    assert entropy["points"] == 5000 and len(entropy["steps"]) <= 1000
    assert dict(zip(entropy["steps"], entropy["values"], strict=True))[2500] == 0.01
    assert body["last_step"] == 5000
    assert [(a["name"], a["step"], a["message"], a["panel"]) for a in body["alerts"]] == [
        ("entropy_collapse", 2500, "low", "entropy"), ("no_signal", 4000, "", "zero_signal")]  # fmt: skip
    panels = {panel["id"]: panel for panel in body["panels"]}
    assert panels["reward"]["series"] == ["reward/mean", "reward/correct"]
    assert panels["reward"]["labels"] == ["mean", "correct"] and "alerts/no_signal" not in body["series"]
    assert panels["time/step_seconds"]["more"] and body["series"]["time/step_seconds"]["points"] == 3
    main = client_for(store).get(f"/api/runs/{run.id}/curves", params={"only": "main"}).json()
    more = client_for(store).get(f"/api/runs/{run.id}/curves", params={"only": "more"}).json()
    assert (
        set(main["series"]) == {"reward/mean", "reward/correct", "entropy"}
        and main["panels"] == body["panels"]
    )
    assert set(more["series"]) == {"time/step_seconds"} and more["alerts"] == body["alerts"]


def test_eval_compare_and_audit_read_what_the_commands_compute(store):
    from rewardlab.eval.compare import compare_runs
    from rewardlab.rubrics.audit import audit_run

    config = {"env": {"name": "event_selection"}, "split": "eval", "rollouts_per_example": 1}
    runs = []
    for label, picks in (("a", ["e01"]), ("b", ["e01", "e03"])):
        run = store.create_run("eval", config, manifest={}, name=label)
        output, gold = said(json.dumps({"selected_event_ids": picks})), '{"selected_event_ids": ["e03"]}'
        rows = [scored(f"x{i}", output, 0.2 + 0.1 * len(picks) * i, {"id_f1": 0.1 * i}, answer=gold)
                for i in range(6)]  # fmt: skip
        store.log_rollouts(run.id, 0, "eval", rows)
        store.finish(run.id, summary={"mean_reward": 0.5, "std_reward": 0.1, "pass@1": 0.5, "components": {}})
        runs.append(run.id)
    client = client_for(store)
    evaluation = client.get(f"/api/runs/{runs[0]}/eval").json()
    low, high = evaluation["reward"]["ci95"]
    assert low < 0.45 < high and evaluation["pass_at"] == {"1": 0.5}
    assert evaluation["lowest"][0]["example_id"] == "x0"
    body = client.get("/api/compare", params={"a": runs[0], "b": runs[1]}).json()
    expected = compare_runs(store, runs[0], runs[1], num_samples=8).to_dict()
    assert body["reward"]["mean_diff"] == pytest.approx(expected["reward"]["mean_diff"])
    assert body["reward"]["wins"] == 5 and body["reward"]["ties"] == 1
    sets = body["samples"][0]["id_sets"]
    assert sets["gold"] == ["e03"] and sets["a"]["overlap"] == [] and sets["a"]["missed"] == ["e03"]
    assert sets["b"] == {"ids": ["e01", "e03"], "overlap": ["e03"], "extra": ["e01"], "missed": []}
    assert client.get(f"/api/runs/{runs[0]}/compare").status_code == 400  # an eval run is no compare run

    trained = store.create_run("train", {}, manifest={})
    for step in range(12):
        store.log_metrics(trained.id, step, {"reward/mean": 0.1, "reward/correct": 0.1 + 0.001 * (step % 2),
                                             "reward/format": 0.05 * step})  # fmt: skip
    store.update_summary(
        trained.id, {"rubric": {"weights": {"correct": 1.0, "format": 0.5}, "primary": "correct"}}
    )
    audit = client.get(f"/api/runs/{trained.id}/audit").json()
    report = audit_run(store, trained.id)
    assert audit["flags"] == report.flags and any("format" in flag for flag in audit["flags"])
    assert [c["name"] for c in audit["components"]] == ["correct", "format"] and audit["components"][0][
        "primary"
    ]
    refused = client.get(f"/api/runs/{runs[0]}/audit")
    assert refused.status_code == 400 and "the audit reads a train run" in refused.json()["error"]


def test_the_pages_and_the_vendored_chart_library_are_served(store):
    client = client_for(store)
    page = client.get("/")
    assert (
        page.status_code == 200
        and "static/app.js" in page.text
        and "static/vendor/uPlot.iife.min.js" in page.text
    )
    for path in ("/static/app.js", "/static/style.css", "/static/vendor/uPlot.iife.min.js",
                 "/static/vendor/uPlot.min.css", "/static/favicon.svg"):  # fmt: skip
        assert client.get(path).status_code == 200, path
    empty = {"root": str(store.root), "total": 0, "kinds": [], "statuses": [], "runs": []}
    assert client.get("/api/runs").json() == empty


# ------------------------------------------------------------------------------------------- vendoring


def test_the_chart_library_is_checked_against_its_pinned_integrity(tmp_path, monkeypatch):
    assert vendor.is_vendored(), "run `python -m rewardlab.dashboard.vendor` (make install does)"
    message = user_error(vendor.extract, b"not the tarball", tmp_path / "vendor")
    assert "is not the pinned sha512-" in message and not (tmp_path / "vendor").exists()
    copy = tmp_path / "copy"
    shutil.copytree(vendor.VENDOR_DIR, copy)
    monkeypatch.setattr(vendor, "download", lambda *a, **k: pytest.fail("downloaded although vendored"))
    assert [path.name for path in vendor.vendor(copy)] == [
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "uPlot.LICENSE",
    ]
    (copy / "uPlot.min.css").unlink()
    assert not vendor.is_vendored(copy)


# ------------------------------------------------------------------------------------------- the command


def test_the_command_says_in_one_line_what_is_wrong(tmp_path, monkeypatch):
    missing = DashboardConfig(runs_dir=str(tmp_path / "absent"))
    assert "no run store at" in user_error(serve_dashboard, missing)
    (tmp_path / "runs").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = DashboardConfig(runs_dir=str(tmp_path / "runs"), port=port)
        assert f"cannot listen on 127.0.0.1:{port}" in user_error(serve_dashboard, busy)
    monkeypatch.setattr(vendor, "is_vendored", lambda: False)
    message = user_error(serve_dashboard, DashboardConfig(runs_dir=str(tmp_path / "runs")))
    assert "-m rewardlab.dashboard.vendor" in message


def test_queries_refuse_pages_a_run_kind_does_not_have(store):
    trained = store.create_run("train", {}, manifest={})
    with pytest.raises(RewardlabError, match="this page shows eval runs"):
        queries.eval_view(store, trained.id)
