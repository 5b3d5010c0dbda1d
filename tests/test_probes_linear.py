"""`rewardlab probe linear`: per-layer logistic-regression probes read what is linearly there (and a
shuffled-label control is not), the hidden states are the raw residual stream whatever the batching, the
built-in hypernym concept is balanced and split by word, and every mistake is one line."""

import json
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import user_error
from rewardlab.cli import app
from rewardlab.probes.concepts import HYPERNYMS, IMPLIED, Concept, ConceptRow, hypernym_concept, load_concept
from rewardlab.probes.lens import final_norm
from rewardlab.probes.linear import hidden_features, prepare, probe_model, split_rows

runner = CliRunner()
LETTERS = "abcdefghijklmnopqrstuvwxy"  # no z


def z_rows(count: int = 120, seed: int = 1) -> list[dict]:
    """Random letter strings, half with a 'z' put in somewhere: on a character-level model, readable from
    the mean of the input embeddings by a linear probe, and from nothing else."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 9)))
        if i % 2:
            at = rng.randrange(len(word))
            word = word[:at] + "z" + word[at + 1 :]
        rows.append({"text": word, "label": "z" if i % 2 else "no z"})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n")
    return str(path)


def test_a_concept_in_the_input_is_read_at_the_embeddings_and_the_control_is_not(tiny, tmp_path):
    model, tokenizer = tiny
    concept = load_concept(write_jsonl(tmp_path / "z.jsonl", z_rows()))
    assert concept.labels == ("no z", "z") and concept.grouped_by == "text"
    result = prepare(concept, "mean", 0.25, seed=0)
    assert result.majority == pytest.approx(0.5)
    scores = probe_model(model, tokenizer, result, "tiny")
    assert [s.name for s in scores.layers] == ["embed", "1", "2", "3", "4"]
    embed = scores.layers[0]
    assert embed.accuracy >= 0.9 and embed.selectivity >= 0.3
    assert scores.best is embed
    controls = [s.control for s in scores.layers]
    assert 0.35 <= sum(controls) / len(controls) <= 0.65  # shuffled labels: about chance on every layer
    # The last token alone does not hold it (the z is rarely last): the same probe falls to near chance.
    last = prepare(concept, "last", 0.25, seed=0)
    assert probe_model(model, tokenizer, last, "tiny").layers[0].accuracy <= 0.7


def test_hidden_states_are_the_raw_stream_and_do_not_depend_on_the_batch(tiny):
    model, tokenizer = tiny
    texts = ["abc", "a much longer text, padded past the short ones", "xyz?"]
    together = hidden_features(model, tokenizer, texts, "last")
    assert together.shape == (model.config.num_hidden_layers + 1, 3, model.config.hidden_size)
    for i, text in enumerate(texts):
        alone = hidden_features(model, tokenizer, [text], "last")[:, 0]
        np.testing.assert_allclose(together[:, i], alone, rtol=1e-4, atol=1e-5)
    ids = tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
        states = [h[0] for h in out.hidden_states]
        # The last layer is the final norm's input: normed once it is what transformers records.
        np.testing.assert_allclose(final_norm(model)(torch.from_numpy(together[-1, 1])), states[-1][-1],
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
        assert not np.allclose(together[-1, 1], states[-1][-1].numpy(), atol=1e-3)
        mean = hidden_features(model, tokenizer, texts, "mean")
        np.testing.assert_allclose(mean[1, 1], states[1].mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(mean[0, 0], hidden_features(model, tokenizer, ["abc"], "mean")[0, 0],
                                   rtol=1e-4, atol=1e-5)  # fmt: skip


def test_the_hypernym_concept_is_balanced_and_never_wrongly_negative():
    concept = hypernym_concept(seed=0)
    words = {word: category for category, members in HYPERNYMS.items() for word in members}
    assert len(words) == 150 and len(concept.rows) == 300 and concept.grouped_by == "word"
    assert concept.rows[0] == ConceptRow("A dog is a kind of animal.", 1, "dog")
    assert ConceptRow("An oak is a kind of tree.", 1, "oak") in concept.rows
    wrong_uses = dict.fromkeys(HYPERNYMS, 0)
    for row in concept.rows:
        category = row.text.removesuffix(".").split(" is a kind of ")[1]
        true = {words[row.group], *IMPLIED.get(words[row.group], ())}
        assert (category in true) == (row.label == 1), row
        wrong_uses[category] += row.label == 0
    assert set(wrong_uses.values()) == {10}  # each category is wrong exactly as often as it is right
    assert [r.label for r in concept.rows].count(1) == 150
    assert hypernym_concept(seed=0) == concept and hypernym_concept(seed=1) != concept


def test_the_split_keeps_each_word_on_one_side():
    concept = hypernym_concept(seed=0)
    train, test = split_rows(concept, 0.25, seed=0)
    assert sorted(train + test) == list(range(300)) and len(test) == 76
    train_words = {concept.rows[i].group for i in train}
    test_words = {concept.rows[i].group for i in test}
    assert not train_words & test_words and len(test_words) == 38
    assert sum(concept.rows[i].label for i in test) == 38  # both labels of every word: balanced
    assert split_rows(concept, 0.25, seed=0) == (train, test) and split_rows(concept, 0.25, 1)[1] != test
    # Ungrouped rows are split per label, so both sides keep the balance.
    rows = [ConceptRow(f"text {i}", i % 2, f"text {i}") for i in range(40)]
    _, test = split_rows(Concept("c", ("a", "b"), rows, "text"), 0.25)
    assert [rows[i].label for i in test].count(1) == 5 and len(test) == 10


def test_the_command_writes_the_table_the_plot_and_the_numbers(tmp_path):
    concept = write_jsonl(tmp_path / "z.jsonl", z_rows(40))
    args = ["probe", "linear", "--model", "tiny", "--compare-model", "tiny", "--concept", concept]
    result = runner.invoke(app, [*args, "--position", "mean", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "split by text" in result.output and "selectivity" in result.output
    assert "tiny: most selective at layer embed" in result.output
    saved = json.loads((tmp_path / "out" / "linear_probe.json").read_text())
    assert saved["labels"] == ["no z", "z"] and saved["train_rows"] + saved["test_rows"] == 40
    first, second = saved["models"]
    assert first == second and len(first["layers"]) == 5  # the same model on the same split: the same
    assert (tmp_path / "out" / "linear_probe.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("rows", "concept", "extra", "said"),
    [
        (None, "missing.jsonl", [], "concept file not found: "),
        ([{"label": 1}], None, [], "line 1: the row has no text"),
        ([{"text": "a", "label": 1}, {"text": "b"}], None, [], "line 2: the row has no label"),
        ([{"text": "a", "label": 1.5}], None, [], "line 1: the row has no label"),
        ([{"text": t, "label": t} for t in "abcdefgh"], None, [], "exactly 2 label values, found 8"),
        ([{"text": t, "label": 1} for t in "abcdefgh"], None, [], "exactly 2 label values, found 1"),
        ([{"text": t, "label": i % 2} for i, t in enumerate("abcde")], None, [], "5 rows are too few"),
        (None, "hypernyms", [], "unknown built-in concept 'hypernyms' (built in: hypernym)"),
        (None, "hypernym", ["--position", "first"], "--position must be one of last, mean"),
        (None, "hypernym", ["--test-fraction", "1"], "--test-fraction must be between 0 and 1"),
        ([{"text": t, "label": i // 7} for i, t in enumerate("abcdefgh")], None, ["--test-fraction", "0.9"],
         "the train split holds one label only"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line(tmp_path, rows, concept, extra, said):
    if rows is not None:
        concept = write_jsonl(tmp_path / "concept.jsonl", rows)
    elif concept.endswith(".jsonl"):
        concept = str(tmp_path / concept)
    result = runner.invoke(app, ["probe", "linear", "--model", "no-such-model", "--concept", concept, *extra])
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert said in lines[0]  # said before the (unknown) model is ever loaded
    assert user_error(load_concept, "nothing-built-in").startswith("unknown built-in concept")
