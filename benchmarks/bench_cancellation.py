"""What abandoned work costs the next request: 50 streams closed after their first chunk, then one short
request, against the same request on an idle server.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cancellation.py

The 50 streams ask for ``max_tokens`` each with EOS biased away, so each would run to the limit if nobody
stopped it. The short request is sent right after the last stream is closed; its latency is the median of
``--repeats`` rounds. The server's ``/metrics`` says how many tokens were generated in all.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_process import ServerProcess  # noqa: E402

SHORT = {"model": "tiny", "messages": [{"role": "user", "content": "12+7="}], "max_tokens": 32}


async def abandon(client: httpx.AsyncClient, url: str, request: dict) -> None:
    async with client.stream("POST", url, json=request) as reply:
        async for _ in reply.aiter_lines():
            break  # the first chunk, then the client leaves


async def short_latency(client: httpx.AsyncClient, url: str) -> float:
    started = time.perf_counter()
    reply = await client.post(url, json=SHORT)
    reply.raise_for_status()
    return time.perf_counter() - started


async def measure(base: str, streams: int, max_tokens: int, repeats: int, eos: int) -> dict:
    url = f"{base}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=120) as client:
        await short_latency(client, url)  # warm-up
        idle = [await short_latency(client, url) for _ in range(repeats)]
        tokens_before = (await client.get(f"{base}/metrics")).json()["completion_tokens"]
        after = []
        for _ in range(repeats):
            heavy = {**SHORT, "stream": True, "max_tokens": max_tokens, "logit_bias": {str(eos): -100}}
            await asyncio.gather(*(abandon(client, url, heavy) for _ in range(streams)))
            after.append(await short_latency(client, url))
        await asyncio.sleep(1)
        tokens = (await client.get(f"{base}/metrics")).json()["completion_tokens"] - tokens_before
    return {"idle": statistics.median(idle), "after": statistics.median(after), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from rewardlab.models import load_model

    eos = load_model("tiny")[1].eos_token_id
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = ServerProcess(
        "rewardlab",
        lambda port: [sys.executable, "-m", "rewardlab.cli", "serve", "--model", "tiny", "--port", str(port)],
        threads=1,
        log=log,
    )
    try:
        server.wait_ready()
        result = asyncio.run(measure(server.url, args.streams, args.max_tokens, args.repeats, eos))
    finally:
        server.stop()
    would_be = args.streams * args.max_tokens * args.repeats
    print(
        f"short request: idle {result['idle'] * 1000:.0f} ms, right after {args.streams} abandoned streams "
        f"{result['after'] * 1000:.0f} ms ({result['after'] / result['idle']:.2f}x); generated "
        f"{result['tokens']} tokens where the abandoned streams asked for {would_be}"
    )


if __name__ == "__main__":
    main()
