"""How long a long prompt's prefill stalls the rows already decoding, with and without prefill slices.

    .venv/bin/python benchmarks/bench_prefill_stall.py --model smollm2-135m --dtype bfloat16

In process, on the continuous engine: 8 streamed rows decode (their end-of-turn biased away), then a request
with a long prompt (``--prompt-tokens``) arrives. For each ``--prefill-chunk-tokens`` setting the script
reports the running rows' longest gap between two tokens while the long prompt is prefilled, against their
median gap; a chunk as large as the prompt is prefilling it whole (no slicing).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch

from rewardlab.serve import build_engine


async def scenario(engine, prompt_tokens: int) -> tuple[float, float, float]:
    """(median gap, longest gap after the long prompt arrived, the long request's time to first token)."""
    renderer = engine.sampler.renderer
    bias = {token: -100.0 for token in engine.sampler.stop_ids}
    prompt = renderer.prompt_ids([{"role": "user", "content": "Say something."}])
    running = [
        engine.submit("base", [prompt], 1, 1.0, 1.0, 200, [], None, stream=True, logit_bias=bias)
        for _ in range(8)
    ]
    stamps: list[float] = []

    async def read(job) -> None:
        while (item := await job.stream.get()) is not None:
            if item[1]:
                stamps.append(time.perf_counter())

    async def drain(job) -> None:
        while await job.stream.get() is not None:
            pass

    # One running row's tokens are timed (all 8 take each step together); the others are read and dropped.
    readers = [asyncio.ensure_future(read(running[0]))] + [
        asyncio.ensure_future(drain(j)) for j in running[1:]
    ]
    while len(stamps) < 20:  # well into decoding
        await asyncio.sleep(0.001)
    long_ids = engine.models.tokenizer("12+7=" * (prompt_tokens // 4))["input_ids"][:prompt_tokens]
    arrived = time.perf_counter()
    long_job = engine.submit("base", [long_ids], 1, 0.0, 1.0, 4, [], None, stream=True)
    first_token = None
    while (item := await long_job.stream.get()) is not None:
        if first_token is None and item[1]:
            first_token = time.perf_counter() - arrived
    await asyncio.gather(*readers, long_job.future, *(job.future for job in running))
    moments = sorted(set(stamps))
    gaps = [b - a for a, b in zip(moments, moments[1:], strict=False)]
    during = [b - a for a, b in zip(moments, moments[1:], strict=False) if b > arrived]
    return statistics.median(gaps), max(during[:40]), first_token or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"model {args.model} ({args.dtype}), a {args.prompt_tokens}-token prompt arriving while 8 rows "
          f"decode, {args.threads} torch threads")  # fmt: skip
    print()
    print("| prefill chunk (tokens) | median gap between tokens (ms) | longest gap while it prefills (ms) "
          "| its TTFT (s) |")  # fmt: skip
    print("|---:|---:|---:|---:|")
    for chunk in args.chunks:
        engine = build_engine(args.model, {}, served_name="base", dtype=args.dtype, prefill_chunk=chunk)

        async def run(engine=engine):
            engine.start()
            try:
                await scenario(engine, args.prompt_tokens)  # warm-up: first calls build caches
                return await scenario(engine, args.prompt_tokens)
            finally:
                await engine.stop()

        median, longest, first = asyncio.run(run())
        print(f"| {chunk} | {median * 1000:.0f} | {longest * 1000:.0f} | {first:.2f} |")


if __name__ == "__main__":
    main()
