"""Throughput of `rewardlab serve`: generated tokens per second with 1, 8 and 32 concurrent clients.

    .venv/bin/python benchmarks/bench_serve.py [--model tiny] [--max-tokens 32] [--requests-per-client 4]

For each server setup a real server is started as a subprocess on 127.0.0.1 (the tiny model's decoding is
mostly Python, so clients in the same process would slow it down), warmed up, then driven by client threads
sending chat completions back to back (sampled, temperature 1, a different prompt each). Setups:

* batched: the default (``--max-batch-size 32``), a batch holds one model's requests;
* batched, mixed adapters: ``--mix-adapters``, base and adapter requests share a batch;
* unbatched: ``--max-batch-size 1``, one request at a time.

Traffic is base-only (every request names the base model) or mixed (alternately the base and a LoRA adapter
with perturbed weights, created for the run). Every cell is bounded by ``--requests-per-client`` requests per
client and ``--seconds`` of wall time; with ``--repeats`` the fastest run of each cell is reported (the
machine may be shared). Tokens/s counts ``usage.completion_tokens``; "per batch" is completions
per ``generate`` call, from the server's ``/metrics``. Prints a markdown table.
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
from pathlib import Path

import httpx
import torch
from server_process import ServerProcess

SETUPS = {
    "continuous": ["--max-batch-size", "32"],
    "static batched": ["--scheduler", "static", "--max-batch-size", "32"],
    "static, mixed adapters": ["--scheduler", "static", "--max-batch-size", "32", "--mix-adapters"],
    "unbatched": ["--scheduler", "static", "--max-batch-size", "1"],
}
TRAFFIC = {"base only": ["base"], "mixed base + adapter": ["base", "tuned"]}
COLUMNS = ("setup", "traffic", "clients", "requests", "tokens/s", "mean latency (s)", "p95 (s)", "per batch")


@dataclass
class Cell:
    setup: str
    traffic: str
    clients: int
    requests: int
    tokens: int
    seconds: float
    latencies: list[float]
    per_batch: float


def make_adapter(model: str, path: Path) -> None:
    """A LoRA adapter with visibly non-zero weights, so adapter rows really take peft's adapter path."""
    from rewardlab.models import LoraSettings, load_model

    torch.manual_seed(0)
    peft_model, _ = load_model(model, lora=LoraSettings(rank=16))
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.02)
    peft_model.save_pretrained(path)


class RewardlabServer(ServerProcess):
    def __init__(self, model: str, adapter: Path, flags: list[str], threads: int, log: Path):
        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "rewardlab.cli", "serve", "--model", model,
                    "--adapter", f"tuned={adapter}", "--port", str(port), *flags]  # fmt: skip

        super().__init__("rewardlab", command, threads, log)

    def metrics(self) -> dict:
        return httpx.get(f"{self.url}/metrics").json()


def drive(server: RewardlabServer, base: str, models: list[str], clients: int, args) -> tuple[int, int, list]:
    """``clients`` threads, each sending its requests back to back; (requests, tokens, latencies)."""
    names = {"base": base, "tuned": "tuned"}
    deadline = time.monotonic() + args.seconds
    lock = threading.Lock()
    done = {"requests": 0, "tokens": 0}
    latencies: list[float] = []
    barrier = threading.Barrier(clients)
    errors: list[str] = []

    def client(index: int, http: httpx.Client) -> None:
        barrier.wait()
        for k in range(args.requests_per_client):
            if time.monotonic() > deadline:
                return
            body = {
                "model": names[models[(index + k) % len(models)]],
                "messages": [{"role": "user", "content": f"{index * 31 + k}+{k}="}],
                "max_tokens": args.max_tokens,
                "temperature": 1.0,
            }
            started = time.perf_counter()
            reply = http.post(f"{server.url}/v1/chat/completions", json=body, timeout=600)
            if reply.status_code != 200:
                errors.append(f"{reply.status_code}: {reply.text[:500]}")
                return
            with lock:
                latencies.append(time.perf_counter() - started)
                done["requests"] += 1
                done["tokens"] += reply.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(limits=limits) as http:
        threads = [threading.Thread(target=client, args=(i, http)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:  # a benchmark of failing requests measures nothing
        raise RuntimeError(f"{len(errors)} requests failed, the first with {errors[0]}")
    return done["requests"], done["tokens"], latencies


def measure(server: RewardlabServer, model: str, setup: str, traffic: str, clients: int, args) -> Cell:
    before = server.metrics()
    started = time.perf_counter()
    requests, tokens, latencies = drive(server, model, TRAFFIC[traffic], clients, args)
    seconds = time.perf_counter() - started
    after = server.metrics()
    per_batch = (after["completions"] - before["completions"]) / max(after["batches"] - before["batches"], 1)
    return Cell(setup, traffic, clients, requests, tokens, seconds, latencies, per_batch)


def run_setup(model: str, adapter: Path, setup: str, args) -> list[Cell]:
    server = RewardlabServer(model, adapter, SETUPS[setup], args.threads, adapter.parent / "server.log")
    cells = []
    try:
        server.wait_ready(timeout=180)
        traffic_kinds = ["mixed base + adapter"] if setup == "static, mixed adapters" else list(TRAFFIC)
        drive(server, model, ["base", "tuned"], 2, args)  # warm-up: first calls build caches
        for traffic in traffic_kinds:
            for clients in args.clients:
                runs = [measure(server, model, setup, traffic, clients, args) for _ in range(args.repeats)]
                best = max(runs, key=lambda cell: cell.tokens / cell.seconds)
                cells.append(best)
                print(
                    f"  {setup} / {traffic} / {clients}: {best.tokens / best.seconds:.0f} tok/s",
                    file=sys.stderr,
                )
    finally:
        server.stop()
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="most wall time per cell")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell; the fastest is reported")
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "tuned"
        make_adapter(args.model, adapter)
        cells = [cell for setup in args.setups for cell in run_setup(args.model, adapter, setup, args)]

    print(
        f"model {args.model}, {args.max_tokens} new tokens per request (temperature 1), up to "
        f"{args.requests_per_client} requests per client, best of {args.repeats}, {os.cpu_count()} CPUs, "
        f"server torch threads {args.threads}, {time.perf_counter() - started:.0f}s in all"
    )
    print()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---:|" * (len(COLUMNS) - 2))
    for c in cells:
        p95 = statistics.quantiles(c.latencies, n=20)[-1] if len(c.latencies) > 1 else c.latencies[0]
        print(
            f"| {c.setup} | {c.traffic} | {c.clients} | {c.requests} | {c.tokens / c.seconds:.0f} | "
            f"{statistics.mean(c.latencies):.2f} | {p95:.2f} | {c.per_batch:.1f} |"
        )


if __name__ == "__main__":
    main()
