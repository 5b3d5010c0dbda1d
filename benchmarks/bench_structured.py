"""What a response format costs the local sampler, per generated token.

    .venv/bin/python benchmarks/bench_structured.py [--model tiny --model smollm2-135m] [--batch 1 --batch 8]
        [--max-tokens 96] [--repeats 3]

``LocalSampler.generate`` with a JSON schema, with ``json_object`` and without a format, at temperature 1 on
the same prompts and seeds. In the constrained runs the grammar's own work is timed where it happens
(filling the token masks, applying them to the logits, advancing the matchers) and divided by the tokens the
rows generated: that is the overhead per token. Beside it, the time per decoding step of the whole batch with
and without a format (a step is one token for every row still generating), best of ``--repeats``; their
difference also holds what the grammar changes about the text (the rows of a batch finish at other steps).
The prefill (the prompt, once) is not counted; the first constrained call of each model, which builds the
grammar's view of the vocabulary and compiles the schema, is timed apart.
"""

from __future__ import annotations

import argparse
import time

import torch

from rewardlab.models.loading import load_model
from rewardlab.sampling import structured
from rewardlab.sampling.base import Prompt, SamplingParams
from rewardlab.sampling.local import LocalSampler

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "member": {"type": "boolean"},
        "level": {"type": "string", "enum": ["low", "mid", "high"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
    },
    "required": ["name", "age", "member", "level", "tags"],
    "additionalProperties": False,
}
FORMATS = {
    "none": None,
    "json_schema": {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
    "json_object": {"type": "json_object"},
}
PROMPT = [{"role": "user", "content": "Describe a person as JSON with name, age, member, level and tags."}]


class Timed:
    """Wraps ``Constraint.mask`` and ``Constraint.advance`` to add up their time and the live row-steps."""

    def __init__(self):
        self.seconds = 0.0
        self.row_steps = 0
        self._mask, self._advance = structured.Constraint.mask, structured.Constraint.advance

    def __enter__(self):
        timed = self

        def mask(constraint, logits, finished):
            started = time.perf_counter()
            try:
                return timed._mask(constraint, logits, finished)
            finally:
                timed.seconds += time.perf_counter() - started

        def advance(constraint, tokens, finished):
            started = time.perf_counter()
            timed._advance(constraint, tokens, finished)
            timed.seconds += time.perf_counter() - started
            timed.row_steps += finished.count(False)

        structured.Constraint.mask, structured.Constraint.advance = mask, advance
        return self

    def __exit__(self, *exc):
        structured.Constraint.mask, structured.Constraint.advance = self._mask, self._advance


def run(sampler: LocalSampler, batch: int, max_tokens: int, response_format, seed: int):
    """(seconds after the prefill, decoding steps, tokens generated, grammar seconds, grammar row-steps,
    stopped rows)."""
    params = SamplingParams(n=batch, max_new_tokens=max_tokens, seed=seed, response_format=response_format)
    prefill = sampler.forward.prefill
    prefilled = []

    def timed_prefill(*args):
        result = prefill(*args)
        prefilled.append(time.perf_counter())
        return result

    sampler.forward.prefill = timed_prefill
    try:
        with Timed() as timed:
            [outputs] = sampler.generate([Prompt(PROMPT)], params)
            seconds = time.perf_counter() - prefilled[0]
    finally:
        del sampler.forward.prefill
    steps = max(len(g.token_ids) for g in outputs)
    tokens = sum(len(g.token_ids) for g in outputs)
    stopped = sum(g.finish_reason == "stop" for g in outputs)
    return seconds, steps, tokens, timed.seconds, timed.row_steps, stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append")
    parser.add_argument("--batch", action="append", type=int)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for model_name in args.model or ["tiny", "smollm2-135m"]:
        model, tokenizer = load_model(model_name)
        sampler = LocalSampler(model, tokenizer)
        started = time.perf_counter()
        sampler.generate(
            [Prompt(PROMPT)], SamplingParams(max_new_tokens=1, response_format=FORMATS["json_schema"])
        )
        setup = time.perf_counter() - started
        print(
            f"{model_name}: first constrained call (vocabulary + compile + 1 token) {setup:.2f} s", flush=True
        )
        for batch in args.batch or [1, 8, 32]:
            best: dict[str, tuple] = {}
            for repeat in range(args.repeats):  # formats alternate, so drift hits each alike
                for name, response_format in FORMATS.items():
                    result = run(sampler, batch, args.max_tokens, response_format, seed=repeat)
                    per_step = result[0] / max(result[1], 1)
                    if name not in best or per_step < best[name][0]:
                        best[name] = (per_step, *result)
            plain_step = best["none"][0]
            for name in FORMATS:
                per_step, seconds, steps, tokens, grammar_s, row_steps, stopped = best[name]
                overhead = grammar_s / row_steps * 1e6 if row_steps else float("nan")
                share = grammar_s / seconds if row_steps else float("nan")
                rows.append((model_name, batch, name, per_step * 1e3, per_step / plain_step, overhead, share,
                             tokens / batch, f"{stopped}/{batch}"))  # fmt: skip
                print(rows[-1], flush=True)
    print(f"\nat most {args.max_tokens} tokens, temperature 1, best of {args.repeats}, 1 thread")
    print("| model | rows | format | ms per step | × no format | grammar µs per token | grammar share of "
          "the time | tokens per row | stopped |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for model_name, batch, name, step_ms, ratio, overhead, share, per_row, stopped in rows:
        grammar = "" if name == "none" else f"{overhead:.0f}"
        shown = "" if name == "none" else f"{share:.0%}"
        print(f"| {model_name} | {batch} | {name} | {step_ms:.2f} | {ratio:.2f} | {grammar} | {shown} | "
              f"{per_row:.0f} | {stopped} |")  # fmt: skip


if __name__ == "__main__":
    main()
