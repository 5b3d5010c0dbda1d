"""Rows written by a served model: ``data generate --template`` through ``rewardlab serve``, with and without
the schema sent as ``response_format`` (constrained decoding), side by side on one server.

    .venv/bin/python benchmarks/bench_template_rows.py --model smollm2-135m --dtype bfloat16 --rows 48

The rows are the window titles of the event-selection recipe (examples/data/event_logs/): the template
asks for one title of a given app, the schema pins the app and bounds the title. For each mode: rows
written per second, the draws rejected (and why), the reply tokens the server generated per second, and
the reply tokens spent per row written. Unconstrained replies are parsed and checked all the same (the
template says "Reply with JSON only"), so what they cost shows in the rejections; a row gets ``--attempts``
draws, and a mode whose row none of them passes stops there (said in the table). The grammar's own cost per
token is measured apart, in ``bench_structured.py``. Prints a markdown table; BENCHMARKS.md has the command
and the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from server_process import ServerProcess

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "event_logs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    parser.add_argument("--attempts", type=int, default=4, help="draws per row before a mode stops")
    args = parser.parse_args()

    from rewardlab.config import DataGenerateConfig
    from rewardlab.data.generate import generate, rejected_path
    from rewardlab.errors import RewardlabError
    from rewardlab.models.loading import resolve

    model_dir, _ = resolve(args.model)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "rewardlab.cli", "serve", "--model", model_dir]
        command += ["--dtype", args.dtype]
        server = ServerProcess(
            "serve", lambda port: [*command, "--port", str(port)], args.threads, Path(tmp) / "serve.log"
        )
        try:
            server.wait_ready()
            for constrained in (True, False):
                cfg = DataGenerateConfig(
                    template=str(EXAMPLE / "window_title.txt"),
                    row_schema=str(EXAMPLE / "window_title.schema.json"),
                    base_url=f"{server.url}/v1", model=model_dir, rows=args.rows, balance="app",
                    out=str(Path(tmp) / f"titles_{constrained}.jsonl"), concurrency=args.concurrency,
                    max_tokens=args.max_tokens, environment_rows=False, constrained=constrained,
                    max_attempts=args.attempts,
                )  # fmt: skip
                before = httpx.get(f"{server.url}/metrics").json()["completion_tokens"]
                started = time.perf_counter()
                try:
                    result, stopped = generate(cfg), ""
                except RewardlabError as error:
                    result, stopped = None, str(error)
                seconds = time.perf_counter() - started
                tokens = httpx.get(f"{server.url}/metrics").json()["completion_tokens"] - before
                out = Path(cfg.out)
                written = len(out.read_text().splitlines()) if out.exists() else 0
                rejected = [json.loads(line) for line in rejected_path(out).read_text().splitlines()]
                results.append((constrained, written, rejected, tokens, seconds, stopped))
                said = result.summary() if result else stopped
                print(f"  constrained={constrained}: {said}", file=sys.stderr)
        finally:
            server.stop()
    print(f"model {args.model} ({args.dtype}), {args.rows} rows, concurrency {args.concurrency}, "
          f"max_tokens {args.max_tokens}, server torch threads {args.threads}")  # fmt: skip
    print()
    print("| response_format | rows | seconds | rows/s | rejected | reply tokens/s | reply tokens/row |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for constrained, written, rejected, tokens, seconds, stopped in results:
        counts = Counter(entry["reason"] for entry in rejected)
        reasons = ", ".join(f"{count} {reason}" for reason, count in counts.most_common(3))
        per_row = f"{tokens / written:.0f}" if written else "-"
        note = f"; stopped: row {len(rejected) and rejected[-1]['index']} had no draw pass" if stopped else ""
        print(f"| {'json_schema' if constrained else 'none'} | {written} | {seconds:.0f} | "
              f"{written / seconds:.2f} | {len(rejected)}{f' ({reasons}{note})' if reasons else ''} | "
              f"{tokens / seconds:.0f} | {per_row} |")  # fmt: skip


if __name__ == "__main__":
    main()
