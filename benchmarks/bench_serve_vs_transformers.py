"""`rewardlab serve` against `transformers serve`, the OpenAI-compatible server that ships with transformers.

    .venv/bin/python benchmarks/bench_serve_vs_transformers.py [--model smollm2-135m] [--dtype bfloat16]

Both servers load the same model directory in the same dtype on the CPU with the same torch thread count, and
are driven by the same client threads: chat completions of short arithmetic questions (a different question
each), sampled at temperature 1 with ``max_tokens`` new tokens at most, each client sending its requests back
to back. Servers:

* ``rewardlab``: ``rewardlab serve`` with its defaults (batches up to 32 completions);
* ``transformers``: ``transformers serve`` with its defaults (one request at a time);
* ``transformers-cb``: ``transformers serve --continuous-batching`` (paged attention, requests join a running
  batch). Not in the default set: on the CPU machine of BENCHMARKS.md its server process exits at the first
  request, with no message.

The servers take turns (all client counts on one, then the next), ``--repeats`` times; each cell reports
its fastest run. Tokens/s counts the ``usage.completion_tokens`` the servers report; latency is per request,
as the client saw it. Prints a markdown table; BENCHMARKS.md has the command and results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
from server_process import ServerProcess

SERVERS = ("rewardlab", "transformers", "transformers-cb")


@dataclass
class Cell:
    server: str
    clients: int
    requests: int
    tokens: int
    seconds: float
    latencies: list[float]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def server_command(kind: str, model_dir: str, dtype: str, port: int) -> list[str]:
    if kind == "rewardlab":
        return [sys.executable, "-m", "rewardlab.cli", "serve", "--model", model_dir, "--port", str(port),
                "--dtype", dtype]  # fmt: skip
    command = [str(Path(sys.executable).parent / "transformers"), "serve", model_dir, "--port", str(port),
               "--dtype", dtype, "--device", "cpu"]  # fmt: skip
    return command + (["--continuous-batching"] if kind == "transformers-cb" else [])


def drive(server: ServerProcess, model: str, clients: int, args, offset: int = 0) -> Cell:
    """``clients`` threads sending ``args.requests_per_client`` requests each, back to back."""
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"requests": 0, "tokens": 0}
    errors: list[str] = []
    barrier = threading.Barrier(clients)

    def client(index: int, http: httpx.Client) -> None:
        barrier.wait()
        for k in range(args.requests_per_client):
            a, b = 10 + (index * 37 + k * 11 + offset) % 90, 10 + (index * 17 + k * 29 + offset) % 90
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"What is {a} + {b}? Explain briefly."}],
                "max_tokens": args.max_tokens,
                "temperature": 1.0,
            }
            started = time.perf_counter()
            try:
                reply = http.post(f"{server.url}/v1/chat/completions", json=body, timeout=1200)
            except httpx.HTTPError as error:
                errors.append(f"{type(error).__name__}: {error}")
                return
            if reply.status_code != 200:
                errors.append(f"{reply.status_code}: {reply.text[:300]}")
                return
            with lock:
                latencies.append(time.perf_counter() - started)
                totals["requests"] += 1
                totals["tokens"] += reply.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    started = time.perf_counter()
    with httpx.Client(limits=limits) as http:
        threads = [threading.Thread(target=client, args=(i, http)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seconds = time.perf_counter() - started
    if errors:  # a benchmark of failing requests measures nothing
        raise RuntimeError(f"{server.name}: {len(errors)} requests failed, the first with {errors[0]}")
    return Cell(server.name, clients, totals["requests"], totals["tokens"], seconds, latencies)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="anything rewardlab's --model takes")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each server")
    parser.add_argument("--repeats", type=int, default=1, help="turns per server; the fastest is reported")
    parser.add_argument("--servers", nargs="+", default=["rewardlab", "transformers"], choices=SERVERS)
    args = parser.parse_args()

    from rewardlab.models.loading import resolve

    model_dir, adapter = resolve(args.model)
    if adapter is not None:
        raise SystemExit("give a base model: transformers serve does not stack adapters")
    best: dict[tuple[str, int], Cell] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for turn in range(args.repeats):
            for kind in args.servers:
                command = partial(server_command, kind, model_dir, args.dtype)
                server = ServerProcess(kind, command, args.threads, Path(tmp) / f"{kind}.log")
                try:
                    server.wait_ready()
                    warm_up = argparse.Namespace(**{**vars(args), "requests_per_client": 1})
                    drive(server, model_dir, 2, warm_up)  # first calls build caches
                    for clients in args.clients:
                        cell = drive(server, model_dir, clients, args, offset=turn)
                        key = (kind, clients)
                        if key not in best or cell.tokens_per_second > best[key].tokens_per_second:
                            best[key] = cell
                        print(f"  {kind} / {clients}: {cell.tokens_per_second:.1f} tok/s", file=sys.stderr)
                finally:
                    server.stop()

    print(
        f"model {args.model} ({args.dtype}), up to {args.max_tokens} new tokens per request (temperature 1), "
        f"{args.requests_per_client} requests per client, best of {args.repeats}, server torch threads "
        f"{args.threads}, {os.cpu_count()} CPUs, {time.perf_counter() - started:.0f}s in all"
    )
    print()
    print("| server | clients | requests | tokens/s | p50 latency (s) | p95 latency (s) | vs transformers |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in args.servers:
        for clients in args.clients:
            cell = best[(kind, clients)]
            reference = best.get(("transformers", clients))
            ratio = f"{cell.tokens_per_second / reference.tokens_per_second:.1f}x" if reference else "-"
            p50, p95 = statistics.median(cell.latencies), percentile(cell.latencies, 0.95)
            print(
                f"| {kind} | {clients} | {cell.requests} | {cell.tokens_per_second:.1f} | "
                f"{p50:.2f} | {p95:.2f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
