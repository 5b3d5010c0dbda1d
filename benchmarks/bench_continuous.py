"""Serving mixed traffic: rewardlab's static and continuous schedulers, and `transformers serve`.

    .venv/bin/python benchmarks/bench_continuous.py --model tiny --dtype float32
    .venv/bin/python benchmarks/bench_continuous.py --model smollm2-135m --dtype bfloat16 --clients 1 8 32

Each server is a subprocess on 127.0.0.1 with the same model directory, dtype and torch threads; client
threads in this process stream chat completions back to back (``stream: true`` with usage), so each request
gives its time to first token (the first chunk that carries text or ends the choice) and its total latency.
Requests are sampled at temperature 1 and mix lengths: ``max_tokens`` cycles through 16, 48, 24 and 96, and
every 16th request is heavy (``max_tokens`` 384, asking to count to 300). Every server gets the same bodies;
a model may end an answer before its ``max_tokens`` (the table's tokens per request says how long answers
were). Servers:

* ``static``: ``rewardlab serve --scheduler static`` (batch by batch: what rewardlab did before);
* ``continuous``: ``rewardlab serve`` (the default: rows join and leave the batch at every step);
* ``transformers``: ``transformers serve --continuous-batching`` (paged attention; its own scheduler);
* any ``NAME`` given as ``--checkout NAME=DIR``: ``rewardlab serve`` run from the checkout in ``DIR`` (an
  earlier commit, for a before/after in one invocation).

Traffic: ``base`` (every request names the base model: the only traffic ``transformers serve`` can take, as
it does not serve LoRA adapters), ``adapter`` (every request on one LoRA adapter) and ``mixed`` (requests
alternate between the base and two adapters). Adapters are made for the run (LoRA rank 16 on every linear
layer, B drawn at random so they answer differently). A cell stops sending after ``--seconds``; tokens/s is
the servers' ``usage.completion_tokens`` over the cell's wall time. Answers are sampled, so a cell's wall time
depends on how long its heavy answers ran: ``--repeats`` runs every server that many rounds, interleaved, and
reports the median tokens/s (with each round's) and percentiles over all rounds' requests. Prints markdown
tables; BENCHMARKS.md has the command and the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
from random_adapters import make_adapters
from server_process import ServerProcess

LENGTHS = (16, 48, 24, 96)
HEAVY_EVERY, HEAVY_TOKENS = 16, 384
HEAVY_PROMPT = "Count from 1 to 300, one number per line."
TRAFFIC = {"base": ["base"], "adapter": ["one"], "mixed": ["base", "one", "two"]}


@dataclass
class Cell:
    server: str
    traffic: str
    clients: int
    seconds: float = 0.0
    tokens: int = 0
    first_token: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    failed: int = 0  # requests that got no answer (the server failed them or went away)

    @property
    def requests(self) -> int:
        return len(self.latency)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def server_command(kind: str, model_dir: str, adapters: dict[str, str], args, port: int) -> list[str]:
    if kind == "transformers":
        return [str(Path(sys.executable).parent / "transformers"), "serve", model_dir, "--port", str(port),
                "--dtype", args.dtype, "--device", "cpu", "--continuous-batching"]  # fmt: skip
    checkouts = dict(spec.split("=", 1) for spec in args.checkout)
    # A server from another checkout (an earlier commit, say): the same command on that checkout's source.
    source = ["env", f"PYTHONPATH={Path(checkouts[kind]) / 'src'}"] if kind in checkouts else []
    command = [
        *source,
        sys.executable,
        "-m",
        "rewardlab.cli",
        "serve",
        "--model",
        model_dir,
        "--port",
        str(port),
        "--dtype",
        args.dtype,
        "--max-batch-size",
        str(args.max_batch_size),
        "--set",
        "max_concurrent_requests=1024",
    ]  # fmt: skip  (128 clients: over the default 64)
    for name, path in adapters.items():
        command += ["--adapter", f"{name}={path}"]
    return command + (["--scheduler", "static"] if kind == "static" else [])


def stream_one(http: httpx.Client, url: str, body: dict, cell: Cell, lock: threading.Lock) -> str | None:
    """One streamed request: its time to first token, latency and tokens go into ``cell``; an error, said."""
    started = time.perf_counter()
    first = None
    tokens = 0
    with http.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=1800) as reply:
        if reply.status_code != 200:
            return f"{reply.status_code}: {reply.read()[:300]!r}"
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return f"stream error: {chunk['error']}"
            for choice in chunk.get("choices") or []:
                if first is None and (choice.get("delta", {}).get("content") or choice.get("finish_reason")):
                    first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    with lock:
        cell.first_token.append(first if first is not None else time.perf_counter() - started)
        cell.latency.append(time.perf_counter() - started)
        cell.tokens += tokens
    return None


def drive(server: ServerProcess, kind: str, names: dict, traffic: str, clients: int, args) -> Cell:
    cell = Cell(kind, traffic, clients)
    lock, errors = threading.Lock(), []
    barrier = threading.Barrier(clients)
    deadline = [0.0]

    def client(index: int, http: httpx.Client) -> None:
        barrier.wait()
        for k in range(args.requests_per_client):
            if time.perf_counter() > deadline[0]:
                return
            number = index * args.requests_per_client + k
            heavy = number % HEAVY_EVERY == 0
            a, b = 10 + (index * 37 + k * 11) % 90, 10 + (index * 17 + k * 29) % 90
            body = {
                "model": names[TRAFFIC[traffic][number % len(TRAFFIC[traffic])]],
                "messages": [{"role": "user", "content": HEAVY_PROMPT if heavy else f"What is {a} + {b}?"}],
                "max_tokens": HEAVY_TOKENS if heavy else LENGTHS[number % len(LENGTHS)],
                "temperature": 1.0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            try:
                error = stream_one(http, server.url, body, cell, lock)
            except httpx.HTTPError as failure:
                error = f"{type(failure).__name__}: {failure}"
            if error:
                errors.append(error)
                return

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(limits=limits) as http:
        threads = [threading.Thread(target=client, args=(i, http)) for i in range(clients)]
        started = time.perf_counter()
        deadline[0] = started + args.seconds
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cell.seconds = time.perf_counter() - started
    if errors:  # said, and the cell marked: a server that fails under load is a result too
        print(f"  {kind} / {traffic} / {clients}: {len(errors)} requests failed, the first: {errors[0]}",
              file=sys.stderr)  # fmt: skip
        cell.failed = len(errors)
    return cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="anything rewardlab's --model takes (a base model)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--requests-per-client", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=60.0, help="a cell sends no new request after this")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each server")
    parser.add_argument("--max-batch-size", type=int, default=128, help="rewardlab's --max-batch-size")
    parser.add_argument("--servers", nargs="+", default=["static", "continuous", "transformers"])
    parser.add_argument("--traffic", nargs="+", default=list(TRAFFIC), choices=list(TRAFFIC))
    parser.add_argument("--repeats", type=int, default=1, help="rounds over every server, interleaved")
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also a server NAME (list it in --servers): the continuous scheduler of the checkout in DIR",
    )
    args = parser.parse_args()

    from rewardlab.models.loading import resolve

    model_dir, adapter = resolve(args.model)
    if adapter is not None:
        raise SystemExit("give a base model: transformers serve does not stack adapters")
    cells: list[Cell] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(args.model, Path(tmp))
        for kind in [kind for _ in range(args.repeats) for kind in args.servers]:
            command = partial(server_command, kind, model_dir, adapters, args)
            server = ServerProcess(kind, command, args.threads, Path(tmp) / f"{kind}.log")
            names = {"base": model_dir, "one": "one", "two": "two"}
            try:
                server.wait_ready()
                warm_up = argparse.Namespace(**{**vars(args), "requests_per_client": 2})
                drive(server, kind, names, "base", 2, warm_up)  # first calls build caches
                for traffic in args.traffic if kind != "transformers" else ["base"]:
                    for clients in args.clients:
                        if server.process.poll() is not None:
                            break  # the server died in an earlier cell
                        cell = drive(server, kind, names, traffic, clients, args)
                        cells.append(cell)
                        rate, p95 = cell.tokens / cell.seconds, percentile(cell.latency, 0.95)
                        print(
                            f"  {kind} / {traffic} / {clients}: {rate:.0f} tok/s, p95 {p95:.2f}s",
                            file=sys.stderr,
                        )
            finally:
                server.stop()
    print(
        f"model {args.model} ({args.dtype}), {args.requests_per_client} requests per client (at most "
        f"{args.seconds:.0f}s of sending per cell), max_tokens cycling {LENGTHS} with every {HEAVY_EVERY}th "
        f"request {HEAVY_TOKENS}, temperature 1, streamed; server torch threads {args.threads}, "
        f"{os.cpu_count()} CPUs, {time.perf_counter() - started:.0f}s in all"
    )
    print()
    print(
        "| server | traffic | clients | requests | tokens/request | tokens/s | TTFT p50 / p95 / p99 (s) "
        "| latency p50 / p95 / p99 (s) |"
    )
    print("|---|---|---:|---:|---:|---:|---|---|")
    for runs in pooled(cells):
        cell = runs[0]
        if any(run.failed or not run.latency for run in runs):
            print(f"| {cell.server} | {cell.traffic} | {cell.clients} | "
                  f"{sum(run.requests for run in runs)} answered, {sum(run.failed for run in runs)} failed "
                  "| - | - | - | - |")  # fmt: skip
            continue
        first = [t for run in runs for t in run.first_token]
        latency = [t for run in runs for t in run.latency]
        ttft = " / ".join(f"{percentile(first, q):.2f}" for q in (0.5, 0.95, 0.99))
        total = " / ".join(f"{percentile(latency, q):.2f}" for q in (0.5, 0.95, 0.99))
        rates = [run.tokens / run.seconds for run in runs]
        rate = f"{statistics.median(rates):.0f}"
        if len(runs) > 1:  # the median, and every round's
            rate += " (" + ", ".join(f"{r:.0f}" for r in rates) + ")"
        per_request = sum(run.tokens for run in runs) / len(latency)
        print(f"| {cell.server} | {cell.traffic} | {cell.clients} | {len(latency)} | {per_request:.0f} | "
              f"{rate} | {ttft} | {total} |")  # fmt: skip


def pooled(cells: list[Cell]) -> list[list[Cell]]:
    """The rounds of each (server, traffic, clients) cell together, in the order they first ran."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.server, cell.traffic, cell.clients), []).append(cell)
    return list(groups.values())


if __name__ == "__main__":
    main()
