"""Packed bfloat16 weights (oneDNN's blocked layout, made once) against plain ``F.linear`` on a CPU.

    .venv/bin/python benchmarks/bench_packed_weights.py --model smollm2-135m --rows 1 4 13 32

For each row count: one layer's four projections (q/k/v fused, o, gate/up fused, down) alone, and one whole
decoding step of the fused decoder (every layer, the head, attention over 512 cached positions), each timed
plain and packed in alternating rounds; the best round of each is reported with their ratio. The outputs are
checked equal to the bit first. BENCHMARKS.md has the command and the results.
"""

from __future__ import annotations

import argparse
import time

import torch

from rewardlab.models import lean
from rewardlab.models.lean import KVCache, lean_decoder
from rewardlab.models.loading import load_model

COLUMNS, WRITTEN = 512, 300


def mean_ms(call, repeats: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1000


def step_of(decoder, rows: int):
    """One decoding step of ``rows`` rows, each with ``WRITTEN`` positions cached (the whole buffer read)."""
    cache = KVCache.allocate(decoder, rows, COLUMNS, like=decoder.embed, whole=True)
    ids = torch.randint(0, 1000, (rows, 1), generator=torch.Generator().manual_seed(0))
    positions = torch.full((rows, 1), WRITTEN)
    mask = (torch.arange(COLUMNS) <= WRITTEN)[None, None, None, :].expand(rows, 1, 1, COLUMNS)

    def step():
        cache.length = WRITTEN
        return [decoder.logits(decoder.forward(ids, positions, mask, cache)[:, -1])]

    return step


def layer_of(decoder, rows: int):
    layer = decoder.layers[0]
    projections = (layer.qkv, layer.o, layer.gate_up, layer.down)
    seeded = torch.Generator().manual_seed(0)
    inputs = [torch.randn(rows, p.weight.shape[1], generator=seeded).to(p.weight.dtype) for p in projections]
    return lambda: [p(x) for p, x in zip(projections, inputs, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 13, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if not lean._can_pack():
        raise SystemExit("this PyTorch build or CPU has no oneDNN bfloat16 matmul: nothing to compare")
    model, _ = load_model(args.model, dtype="bfloat16")
    packed = lean_decoder(model)
    can_pack, lean._can_pack = lean._can_pack, lambda: False
    plain = lean_decoder(model)
    lean._can_pack = can_pack
    print(f"model {args.model} (bfloat16), {args.threads} torch threads, best of {args.rounds} rounds")
    print()
    print("| rows | one layer's projections, plain / packed (ms) | ratio | decoding step (ms) | ratio |")
    print("|---:|---|---:|---|---:|")
    for rows in args.rows:
        cells = []
        for make, repeats in ((layer_of, 200), (step_of, 10)):
            calls = {"plain": make(plain, rows), "packed": make(packed, rows)}
            outputs = zip(calls["plain"](), calls["packed"](), strict=True)
            assert all(torch.equal(a, b) for a, b in outputs), f"packed and plain differ at {rows} rows"
            times = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, call in calls.items():
                    times[name].append(mean_ms(call, repeats))
            plain_ms, packed_ms = min(times["plain"]), min(times["packed"])
            cells.append(f"{plain_ms:.2f} / {packed_ms:.2f} | {plain_ms / packed_ms:.2f}x")
        print(f"| {rows} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
