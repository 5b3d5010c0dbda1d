"""Batched LoRA: decoding throughput of the continuous engine for base-only, one-adapter and mixed batches.

    .venv/bin/python benchmarks/bench_batched_lora.py --model tiny
    .venv/bin/python benchmarks/bench_batched_lora.py --model smollm2-135m --dtype bfloat16

In process, no HTTP: ``--rows`` requests of ``--tokens`` tokens each (their end-of-turn biased away, so every
row decodes exactly that many) are submitted at once to one engine, and the wall time from submission to the
last answer gives tokens/s. Traffic: every row on the base, every row on one adapter, or rows alternating
between the base and two adapters (LoRA rank 16 on every linear layer, B drawn at random). The three kinds
take turns, ``--repeats`` times; each reports its fastest run and its ratio to one-adapter traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import torch
from random_adapters import make_adapters

from rewardlab.serve import build_engine

TRAFFIC = {"base only": ["base"], "one adapter": ["one"], "mixed: base + 2 adapters": ["base", "one", "two"]}


async def run(engine, models: list[str], rows: int, tokens: int) -> float:
    renderer = engine.sampler.renderer
    bias = {token: -100.0 for token in engine.sampler.stop_ids}
    prompts = [
        renderer.prompt_ids([{"role": "user", "content": f"What is {i} + {2 * i}?"}]) for i in range(rows)
    ]
    started = time.perf_counter()
    jobs = [
        engine.submit(models[i % len(models)], [prompt], 1, 1.0, 1.0, tokens, [], None, logit_bias=bias)
        for i, prompt in enumerate(prompts)
    ]
    await asyncio.gather(*(job.future for job in jobs))
    return rows * tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(args.model, Path(tmp))
        engine = build_engine(
            args.model, adapters, served_name="base", dtype=args.dtype, max_batch_size=args.rows
        )

        async def measure() -> dict[str, float]:
            engine.start()
            try:
                await run(engine, TRAFFIC["mixed: base + 2 adapters"], 4, 8)  # warm-up
                best: dict[str, float] = {}
                for _ in range(args.repeats):
                    for name, models in TRAFFIC.items():
                        rate = await run(engine, models, args.rows, args.tokens)
                        best[name] = max(best.get(name, 0.0), rate)
                return best
            finally:
                await engine.stop()

        best = asyncio.run(measure())
    print(f"model {args.model} ({args.dtype}), {args.rows} rows x {args.tokens} tokens, {args.threads} torch "
          f"threads, best of {args.repeats}")  # fmt: skip
    print()
    print("| traffic | tokens/s | vs one adapter |")
    print("|---|---:|---:|")
    for name, rate in best.items():
        print(f"| {name} | {rate:.0f} | {rate / best['one adapter']:.2f}× |")


if __name__ == "__main__":
    main()
