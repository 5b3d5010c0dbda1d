"""The local sampler's two ways of drawing a token, side by side: ``torch.multinomial`` and the inverse CDF.

    .venv/bin/python benchmarks/bench_sampling_draw.py --model smollm2-135m --dtype bfloat16 --threads 2

One generation as the GRPO harness runs it (4 chat prompts x 8 samples, 32 new tokens, temperature 1, LoRA
rank 8 on every linear layer), timed with each draw in alternating rounds; plus the draw alone on the
(32, vocabulary) probabilities of one step. Prints the best round of each and their ratio. Both draws take
tokens from the same distribution (tests/test_sampling.py checks their frequencies); their random streams
differ, so the generated tokens do too. BENCHMARKS.md has the command and the results.
"""

from __future__ import annotations

import argparse
import time

import torch

from rewardlab.models import LoraSettings, load_model
from rewardlab.sampling.base import Prompt, SamplingParams
from rewardlab.sampling.local import LocalSampler, sample_by_cdf, sample_next

QUESTIONS = [
    "What is 37 + 48? Put the answer in <answer></answer> tags.",
    "Compute 12 * 7 and give the result in <answer></answer> tags.",
    "What is 305 - 99? Answer in <answer></answer> tags.",
    "Add 4512 and 388; answer in <answer></answer> tags.",
]
DRAWS = ("multinomial", "inverse_cdf")


def best_seconds(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(
        args.model, args.dtype, lora=LoraSettings(8, 16.0, 0.0, "all-linear"), trainable=True
    )
    sampler = LocalSampler(model, tokenizer)
    prompts = [Prompt(messages=[{"role": "user", "content": q}]) for q in QUESTIONS]

    def generation(draw: str):
        params = SamplingParams(n=8, temperature=1.0, max_new_tokens=32, seed=0, draw=draw)
        return lambda: sampler.generate(prompts, params)

    for draw in DRAWS:
        generation(draw)()  # first calls: weights fused and packed, kernels warmed
    generated = {draw: 0.0 for draw in DRAWS}
    best = {draw: float("inf") for draw in DRAWS}
    for _ in range(args.rounds):  # alternating, so drift hits both alike
        for draw in DRAWS:
            start = time.perf_counter()
            groups = generation(draw)()
            best[draw] = min(best[draw], time.perf_counter() - start)
            generated[draw] = sum(len(g.token_ids) for group in groups for g in group)
    logits = torch.randn(32, model.config.vocab_size, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    alone = {
        "multinomial": best_seconds(lambda: sample_next(logits, 1.0, 1.0, generator), 10 * args.rounds),
        "inverse_cdf": best_seconds(lambda: sample_by_cdf(logits, 1.0, 1.0, generator), 10 * args.rounds),
    }
    print(f"{args.model} {args.dtype}, {args.threads} threads, best of {args.rounds} rounds")
    print("| draw | generation (s) | tokens | one draw, 32 rows (ms) |")
    print("|---|---|---|---|")
    for draw in DRAWS:
        print(f"| {draw} | {best[draw]:.2f} | {generated[draw]:.0f} | {alone[draw] * 1000:.1f} |")
    print(f"multinomial / inverse_cdf: generation {best['multinomial'] / best['inverse_cdf']:.2f}x, "
          f"draw {alone['multinomial'] / alone['inverse_cdf']:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
