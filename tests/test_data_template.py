"""``data generate --template``: rows written by a model behind an OpenAI-compatible endpoint, the reply
constrained to the schema. A scripted endpoint checks the bookkeeping (placeholders, pinned classes, requests
sent ahead, replies that are not JSON, an endpoint that gives up); a real ``rewardlab serve`` with the
untrained tiny model checks that constrained decoding makes every reply a valid row."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import user_error
from rewardlab.config import DataGenerateConfig
from rewardlab.data.generate import generate, rejected_path
from rewardlab.sampling.base import Generation
from rewardlab.sampling.openai_compat import EndpointError, RequestStats

SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "maxLength": 24},
        "answer": {"type": "string", "pattern": "^[0-9]{1,2}$"},
        "info": {
            "type": "object",
            "properties": {"kind": {"enum": ["add", "sub"]}},
            "required": ["kind"],
            "additionalProperties": False,
        },
    },
    "required": ["prompt", "answer", "info"],
    "additionalProperties": False,
}
TEMPLATE = "Write one {info.kind} problem for level {level} as JSON.\n"


class ScriptedEndpoint:
    """Stands for OpenAISampler: answers each request with a row of the class its schema pins."""

    instances: list[ScriptedEndpoint] = []
    garbage_every = 0  # every n-th reply is not JSON (0: none)
    give_up_after: int | None = None  # requests answered before the endpoint gives up

    def __init__(self, base_url, model, api_key_env="OPENAI_API_KEY", max_concurrency=8, **_):
        self.calls: list[int] = []  # requests per call
        self.sent: list[tuple] = []
        self.stats = RequestStats()
        ScriptedEndpoint.instances.append(self)

    def generate_each(self, requests):
        self.calls.append(len(requests))
        answers = []
        for prompt, params in requests:
            self.sent.append((prompt.messages[0]["content"], params))
            number = len(self.sent)
            if self.give_up_after is not None and number > self.give_up_after:
                raise EndpointError("endpoint http://scripted/v1: gave up after 5 attempts: server error")
            kind = params.response_format["json_schema"]["schema"]["properties"]["info"]["properties"]["kind"]
            row = {"prompt": f"q{number}", "answer": str(number % 90), "info": {"kind": kind["const"]}}
            garbage = self.garbage_every and number % self.garbage_every == 0
            text = "not json {" if garbage else json.dumps(row)
            self.stats.prompt_tokens += 10
            self.stats.completion_tokens += 20
            answers.append([Generation(text=text)])
        return answers

    def close(self):
        pass


@pytest.fixture
def scripted(monkeypatch):
    ScriptedEndpoint.instances.clear()
    monkeypatch.setattr("rewardlab.sampling.openai_compat.OpenAISampler", ScriptedEndpoint)
    for name in ("garbage_every", "give_up_after"):  # a test's script is undone after it
        monkeypatch.setattr(ScriptedEndpoint, name, getattr(ScriptedEndpoint, name))
    return ScriptedEndpoint


def files(tmp_path: Path, template: str = TEMPLATE, schema: dict = SCHEMA) -> tuple[str, str]:
    (tmp_path / "template.txt").write_text(template)
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    return str(tmp_path / "template.txt"), str(tmp_path / "schema.json")


def config(tmp_path: Path, **fields) -> DataGenerateConfig:
    template, schema = files(tmp_path)
    settings = {
        "template": template, "row_schema": schema, "base_url": "http://scripted/v1", "model": "m",
        "rows": 40, "out": str(tmp_path / "rows.jsonl"), "concurrency": 4,
    }  # fmt: skip
    return DataGenerateConfig(**{**settings, **fields})


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_placeholders_are_filled_and_classes_pinned_in_the_schema_sent(tmp_path, scripted):
    result = generate(config(tmp_path, levels={1: 0.5, 2: 0.5}, balance="info.kind"))
    rows = read(tmp_path / "rows.jsonl")
    assert result.written == len(rows) == 40
    endpoint = scripted.instances[0]
    for text, params in endpoint.sent:
        kind = params.response_format["json_schema"]["schema"]["properties"]["info"]["properties"]["kind"]
        assert text == f"Write one {kind['const']} problem for level {text.split()[6]} as JSON.\n"
        assert params.seed is not None and params.max_new_tokens == 512
    for level in (1, 2):  # balanced within each level
        kinds = Counter(r["info"]["kind"] for r in rows if r["info"]["provenance"]["level"] == level)
        assert kinds == {"add": 10, "sub": 10}
    assert result.passed_over == 0  # the balanced field is dealt in turn, not drawn: no request wasted
    provenance = rows[0]["info"]["provenance"]
    assert provenance["model"] == "m" and provenance["endpoint"] == "http://scripted/v1"
    assert len(provenance["prompt_version"]) == 12 and provenance["template"].endswith("template.txt")
    # first attempts go out together, at most 4 x concurrency at a time; only redraws go one by one
    assert max(endpoint.calls) == 16 and sum(1 for c in endpoint.calls if c > 1) >= 40 // 16
    assert result.prompt_tokens == 10 * len(endpoint.sent)
    assert "prompt + " in result.summary()


def test_a_reply_that_is_not_json_is_a_counted_rejection_and_the_row_redrawn(tmp_path, scripted):
    scripted.garbage_every = 5
    result = generate(config(tmp_path, rows=30, usd_per_million_input=1.0, usd_per_million_output=2.0))
    assert result.written == 30
    sent = len(scripted.instances[0].sent)
    assert result.rejected == Counter({"endpoint: reply not JSON": sent // 5})
    rejected = read(rejected_path(tmp_path / "rows.jsonl"))
    assert {entry["reason"] for entry in rejected} == {"endpoint: reply not JSON"}
    assert result.usd == pytest.approx((10 * sent * 1.0 + 20 * sent * 2.0) / 1e6)


def test_an_endpoint_that_gives_up_stops_in_one_line_and_keeps_the_rows_written(tmp_path, scripted):
    scripted.give_up_after = 20
    message = user_error(generate, config(tmp_path, rows=50, concurrency=2))
    scripted.give_up_after = None
    assert "gave up after 5 attempts" in message
    rows = read(tmp_path / "rows.jsonl")
    assert len(rows) == 16  # the first window of 8 twice; the third window failed
    result = generate(config(tmp_path, rows=50, concurrency=2))  # the endpoint is back: goes on from row 16
    assert result.resumed_from == 16 and len(read(tmp_path / "rows.jsonl")) == 50


def test_bad_templates_and_settings_are_one_line(tmp_path, scripted):
    def with_template(text: str) -> DataGenerateConfig:
        path = tmp_path / f"template{len(text)}.txt"
        path.write_text(text)
        return config(tmp_path).model_copy(update={"template": str(path)})

    assert "{info.topic} is not a field of schema" in user_error(generate, with_template("A {info.topic}"))
    assert "{prompt} is not a field" in user_error(generate, with_template("{prompt}"))
    missing = config(tmp_path).model_copy(update={"template": str(tmp_path / "none.txt")})
    assert "template file not found" in user_error(generate, missing)
    with pytest.raises(ValueError, match="a generator or a template, not both"):
        config(tmp_path, generator="x.py:f")
    with pytest.raises(ValueError, match="give base_url and model"):
        DataGenerateConfig(template="t.txt", row_schema="s.json", out="o.jsonl")
    assert not scripted.instances or not scripted.instances[-1].sent  # nothing was sent


def test_the_untrained_tiny_model_served_writes_valid_rows_under_the_schema(tmp_path, monkeypatch):
    from rewardlab.serve import build_engine
    from test_serve import KEY, Server

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    server = Server(build_engine("tiny", {}, max_batch_size=8), tmp_path).start()
    try:
        monkeypatch.setenv("TEMPLATE_KEY", KEY)
        cfg = config(tmp_path, rows=8, base_url=f"{server.url}/v1", model="tiny", api_key_env="TEMPLATE_KEY",
                     balance="info.kind", max_tokens=200, temperature=1.0)  # fmt: skip
        result = generate(cfg)
    finally:
        server.stop()
        torch.set_num_threads(threads)
    rows = read(tmp_path / "rows.jsonl")
    assert result.written == len(rows) == 8
    assert sum(result.rejected.values()) == 0  # every reply parsed and passed the schema
    assert Counter(row["info"]["kind"] for row in rows) == {"add": 4, "sub": 4}
    assert all(1 <= len(row["prompt"]) <= 24 and row["answer"].isdigit() for row in rows)
    assert result.prompt_tokens > 0 and result.completion_tokens > 0  # the server's usage, counted
