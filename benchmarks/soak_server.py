"""Soak `rewardlab serve`: many clients for minutes, valid, malformed and cancelled requests mixed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/soak_server.py [--clients 64] [--seconds 120] [--seed 0]

A server on the tiny model runs as a subprocess on 127.0.0.1 (one torch thread), with its default limits.
``--clients`` clients then send requests back to back for ``--seconds``, each request's kind drawn at random
(``KINDS``, with their weights): chat and text completions, streamed or not (valid: 200 expected);
malformed ones (a body that is not JSON, a field of the wrong type, ``n`` over the server's limit, a model it
does not serve: 400 or 404 expected); and cancelled ones (a stream the client closes after its first few
events, a request the client gives up on before the answer comes).

Reported: requests and status codes per kind; answers that were not what the kind expects; 5xx answers;
lost requests (no answer, a transport error or a timeout, or a stream that ended without ``[DONE]``, on a
request the client did not cancel); 429s (the server's backpressure: allowed, counted); the server's
resident memory and open file descriptors sampled every second (idle before, after the warm-up, peak, last
under load, idle after, every 30 s of load); p50/p95 latency of the valid requests (whole answer; time to
the first token for streams). Then the server must still answer a request, and its log must hold no
traceback. Exits 1 on a 5xx, a lost request, an unexpected answer, or memory grown by more than
``--max-growth`` after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from server_process import ServerProcess

# Kind -> (weight, expected status). Weights: mostly valid traffic, a quarter malformed or cancelled.
KINDS = {
    "chat": (4, 200),
    "chat_stream": (3, 200),
    "completion": (3, 200),
    "completion_stream": (2, 200),
    "bad_json": (1, 400),
    "wrong_type": (1, 400),
    "n_too_large": (1, 400),
    "unknown_model": (1, 404),
    "cancelled_stream": (2, 200),
    "cancelled_wait": (1, 200),
}
VALID = ("chat", "chat_stream", "completion", "completion_stream")
CANCELLED = ("cancelled_stream", "cancelled_wait")
WRONG_TYPES = [
    {"n": "two"},
    {"temperature": "hot"},
    {"max_tokens": [8]},
    {"stop": 5},
    {"messages": "12+7="},
    {"stream": {"yes": True}},
]
TIMEOUT_S = 120.0  # a request unanswered this long is lost


@dataclass
class Outcome:
    kind: str
    status: int | None  # None: no answer (lost, or cancelled before it came)
    seconds: float
    first_token_s: float | None = None
    lost: str | None = None  # why, for a request with no (complete) answer the client did not cancel
    cancelled: bool = False


@dataclass
class Samples:
    """The server's resident memory (MiB) and open file descriptors, once a second, with the time."""

    times: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)


def chat_body(rng: random.Random, model: str, **extra) -> dict:
    a, b = rng.randrange(100), rng.randrange(100)
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"{a}+{b}="}],
        "max_tokens": rng.randrange(4, 33),
        "temperature": rng.choice([0.0, 0.7, 1.0]),
        "n": rng.choice([1, 1, 1, 2]),
        **extra,
    }


def completion_body(rng: random.Random, model: str, **extra) -> dict:
    body = chat_body(rng, model, **extra)
    return {**{k: v for k, v in body.items() if k != "messages"}, "prompt": body["messages"][0]["content"]}


async def read_stream(response: httpx.Response, started: float, stop_after: int | None) -> tuple[bool, float]:
    """(ended with [DONE], time to the first text); stops reading after ``stop_after`` events when given."""
    events, first = 0, None
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            return True, first
        events += 1
        chunk = json.loads(line.removeprefix("data: "))
        if "error" in chunk:
            raise RuntimeError(f"error event: {chunk['error']['message']}")
        if first is None and any(
            c.get("text") or c.get("delta", {}).get("content") for c in chunk["choices"]
        ):
            first = time.perf_counter() - started
        if stop_after is not None and events >= stop_after:
            return False, first
    return False, first


async def one_request(
    http: httpx.AsyncClient, url: str, kind: str, model: str, rng: random.Random
) -> Outcome:
    route = "/v1/completions" if kind.startswith("completion") else "/v1/chat/completions"
    stream = kind.endswith("stream")
    body = (completion_body if route == "/v1/completions" else chat_body)(rng, model, stream=stream)
    content = None
    if kind == "bad_json":
        content = json.dumps(body)[: rng.randrange(1, 40)].encode()  # cut short: not JSON
    elif kind == "wrong_type":
        body.update(rng.choice(WRONG_TYPES))
    elif kind == "n_too_large":
        body["n"] = rng.choice([33, 64, 128, 1000])
    elif kind == "unknown_model":
        body["model"] = f"no-such-model-{rng.randrange(1000)}"
    elif kind == "cancelled_stream":
        body.update(stream=True, max_tokens=rng.randrange(32, 65))
    elif kind == "cancelled_wait":
        body["max_tokens"] = rng.randrange(32, 65)
    request = {"json": body} if content is None else {"content": content}
    started = time.perf_counter()
    elapsed = lambda: time.perf_counter() - started  # noqa: E731
    try:
        if kind == "cancelled_wait":
            try:
                reply = await asyncio.wait_for(http.post(url + route, **request), rng.uniform(0.01, 0.5))
            except TimeoutError:
                return Outcome(kind, None, elapsed(), cancelled=True)
            return Outcome(kind, reply.status_code, elapsed())
        if stream:
            async with http.stream("POST", url + route, **request) as reply:
                if reply.status_code != 200:
                    await reply.aread()
                    return Outcome(kind, reply.status_code, elapsed())
                stop_after = rng.randrange(1, 4) if kind == "cancelled_stream" else None
                done, first = await read_stream(reply, started, stop_after)
            if kind == "cancelled_stream" and not done:
                return Outcome(kind, 200, elapsed(), first, cancelled=True)
            return Outcome(kind, 200, elapsed(), first, lost=None if done else "stream ended without [DONE]")
        reply = await http.post(url + route, **request)
        if reply.status_code == 200:
            reply.json()["choices"]  # a whole answer
        return Outcome(kind, reply.status_code, elapsed())
    except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as error:
        return Outcome(kind, None, elapsed(), lost=f"{type(error).__name__}: {error}"[:300])


async def drive(url: str, clients: int, seconds: float, seed: int, model: str = "tiny") -> list[Outcome]:
    """``clients`` clients sending requests back to back for ``seconds``; every request's outcome."""
    kinds, weights = list(KINDS), [weight for weight, _ in KINDS.values()]
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients)

    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as http:

        async def client(index: int) -> None:
            rng = random.Random(seed * 100_003 + index)
            while time.monotonic() < deadline:
                kind = rng.choices(kinds, weights)[0]
                outcomes.append(await one_request(http, url, kind, model, rng))

        await asyncio.gather(*(client(i) for i in range(clients)))
    return outcomes


def sample_process(pid: int, samples: Samples, stop: threading.Event, every: float = 1.0) -> None:
    """Append ``pid``'s memory and open descriptors to ``samples`` every ``every`` s, until ``stop``."""
    started = time.monotonic()
    while not stop.is_set():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        except (OSError, StopIteration):
            return  # the process is gone
        samples.times.append(time.monotonic() - started)
        samples.rss_mib.append(rss_kib / 1024)
        samples.fds.append(fds)
        stop.wait(every)


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def summary(outcomes: list[Outcome]) -> dict:
    lost = [o for o in outcomes if o.lost and not o.cancelled]
    # 429 is the server's documented backpressure (a client that left is still counted in flight until the
    # server has noticed, while the client is already sending its next request): counted, not unexpected.
    unexpected = [
        o
        for o in outcomes
        if o.status not in (None, 429) and not o.cancelled and o.status != KINDS[o.kind][1]
    ]
    valid = [o for o in outcomes if o.kind in VALID and o.status == 200 and not o.lost]
    firsts = [o.first_token_s for o in valid if o.first_token_s is not None]
    return {
        "requests": len(outcomes),
        "per_kind": dict(Counter(o.kind for o in outcomes)),
        "statuses": {kind: dict(Counter(o.status for o in outcomes if o.kind == kind)) for kind in KINDS},
        "cancelled_by_client": sum(o.cancelled for o in outcomes),
        "server_errors": sum(1 for o in outcomes if o.status is not None and o.status >= 500),
        "too_busy_429": sum(1 for o in outcomes if o.status == 429),
        "lost": len(lost),
        "lost_examples": [f"{o.kind}: {o.lost}" for o in lost[:5]],
        "unexpected": len(unexpected),
        "unexpected_examples": [f"{o.kind}: {o.status}" for o in unexpected[:5]],
        "valid_p50_s": percentile([o.seconds for o in valid], 50),
        "valid_p95_s": percentile([o.seconds for o in valid], 95),
        "stream_first_token_p50_s": percentile(firsts, 50),
        "stream_first_token_p95_s": percentile(firsts, 95),
        "valid_answered": len(valid),
    }


def memory(samples: Samples, load_start: float, load_end: float, warmup: float) -> dict:
    """Memory and descriptors: idle before the load, at the end of the warm-up, peak, last under load, idle
    after, and the growth from the end of the warm-up to the end of the load."""

    def at(t: float) -> int:
        return min(range(len(samples.times)), key=lambda i: abs(samples.times[i] - t))

    before, warm, end = at(load_start), at(load_start + warmup), at(load_end)
    under_load = range(warm, end + 1)
    return {
        "rss_mib": {
            "idle_before": samples.rss_mib[before],
            "after_warmup": samples.rss_mib[warm],
            "peak": max(samples.rss_mib),
            "end_of_load": samples.rss_mib[end],
            "idle_after": samples.rss_mib[-1],
        },
        "growth_after_warmup_mib": samples.rss_mib[end] - samples.rss_mib[warm],
        "peak_after_warmup_mib": max(samples.rss_mib[i] for i in under_load),
        "fds": {"idle_before": samples.fds[before], "peak": max(samples.fds), "idle_after": samples.fds[-1]},
        "rss_every_30s_of_load": [samples.rss_mib[at(t)] for t in range_(load_start, load_end, 30)],
        "samples": len(samples.times),
    }


def range_(start: float, end: float, step: float) -> list[float]:
    return [start + step * k for k in range(int((end - start) // step) + 1)] + [end]


def start_server(root: Path, threads: int) -> ServerProcess:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "rewardlab.cli", "serve", "--model", "tiny", "--port", str(port)]

    server = ServerProcess("rewardlab", command, threads=threads, log=root / "server.log")
    server.wait_ready(timeout=180)
    return server


def answers_after(url: str, timeout: float = 60) -> bool:
    """Whether the server, once the load is over, answers a fresh request (queued and generated)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = httpx.get(f"{url}/metrics", timeout=30).json()
        body = {"model": "tiny", "prompt": "1+1=", "max_tokens": 2}
        reply = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        after = httpx.get(f"{url}/metrics", timeout=30).json()
        if reply.status_code == 200 and after["requests"] == before["requests"] + 1:
            return True
        time.sleep(1)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument(
        "--warmup", type=float, default=20.0, help="seconds of load before memory must stay flat"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument(
        "--max-growth", type=float, default=0.10, help="most RSS growth after the warm-up (share)"
    )
    parser.add_argument("--out", type=Path, help="write the report as JSON here too")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), args.threads)
        samples, stop = Samples(), threading.Event()
        sampler = threading.Thread(
            target=sample_process, args=(server.process.pid, samples, stop), daemon=True
        )
        try:
            sampler.start()
            time.sleep(3)  # idle memory first
            load_start = samples.times[-1]
            started = time.perf_counter()
            outcomes = asyncio.run(drive(server.url, args.clients, args.seconds, args.seed))
            wall = time.perf_counter() - started
            load_end = samples.times[-1]
            answers = answers_after(server.url)
            time.sleep(3)  # idle memory after
            metrics = httpx.get(f"{server.url}/metrics").json()
        finally:
            stop.set()
            server.stop()
        tracebacks = (Path(tmp) / "server.log").read_text().count("Traceback")

    report = {
        "clients": args.clients,
        "seconds": args.seconds,
        "wall_s": wall,
        "seed": args.seed,
        "warmup": args.warmup,
        **summary(outcomes),
        **memory(samples, load_start, load_end, args.warmup),
        "server_metrics": metrics,
        "answered_afterwards": answers,
        "tracebacks_in_server_log": tracebacks,
    }
    report["requests_per_s"] = report["requests"] / wall
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    rss = report["rss_mib"]
    grown = report["growth_after_warmup_mib"] > args.max_growth * rss["after_warmup"]
    failed = report["server_errors"] or report["lost"] or report["unexpected"] or tracebacks
    sys.exit(1 if failed or grown or not answers else 0)


def print_report(r: dict) -> None:
    rss, fds = r["rss_mib"], r["fds"]
    print(
        f"{r['clients']} clients for {r['seconds']:.0f} s (wall {r['wall_s']:.0f} s, seed {r['seed']}): "
        f"{r['requests']} requests ({r['requests_per_s']:.1f}/s), {r['valid_answered']} valid answered, "
        f"{r['cancelled_by_client']} cancelled by the client"
    )
    print(
        f"5xx: {r['server_errors']}; lost: {r['lost']} {r['lost_examples']}; 429 (too busy): "
        f"{r['too_busy_429']}; unexpected answers: "
        f"{r['unexpected']} {r['unexpected_examples']}; tracebacks in the server log: "
        f"{r['tracebacks_in_server_log']}; a fresh request answered afterwards: {r['answered_afterwards']}"
    )
    print(
        f"valid requests: p50 {r['valid_p50_s']:.2f} s, p95 {r['valid_p95_s']:.2f} s; streams' first token: "
        f"p50 {r['stream_first_token_p50_s']:.2f} s, p95 {r['stream_first_token_p95_s']:.2f} s"
    )
    print(
        f"server RSS (MiB): idle before {rss['idle_before']:.0f}, after the {r['warmup']:.0f} s warm-up "
        f"{rss['after_warmup']:.0f}, peak {rss['peak']:.0f}, end of load {rss['end_of_load']:.0f} "
        f"(growth after warm-up {r['growth_after_warmup_mib']:+.1f}), idle after {rss['idle_after']:.0f}; "
        f"open fds: idle {fds['idle_before']}, peak {fds['peak']}, idle after {fds['idle_after']} "
        f"({r['samples']} samples); RSS every 30 s of load: "
        + ", ".join(f"{value:.0f}" for value in r["rss_every_30s_of_load"])
    )
    m = r["server_metrics"]
    print(
        f"server: {m['requests']} requests queued, {m['completions']} completions generated in "
        f"{m['batches']} batches (largest {m['largest_batch']}), {m['failed_batches']} failed batches, "
        f"{m['abandoned']} abandoned (client left before its batch: not generated), model busy "
        f"{m['generation_seconds']:.0f} s"
    )
    print()
    print("| kind | requests | statuses |")
    print("|---|---:|---|")
    for kind in KINDS:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(r["statuses"][kind].items(), key=str))
        print(f"| {kind} | {r['per_kind'].get(kind, 0)} | {statuses} |")


if __name__ == "__main__":
    main()
