"""Fuzz a real `rewardlab serve` from its own OpenAPI schema with schemathesis, far longer than the tests do.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz_server.py [--max-examples 200] [--seed 1]

The server (the tiny model, an API key, runtime adapters on and confined to a temporary directory,
``max_n`` 2 and ``max_tokens`` 8 so that every accepted request is cheap) runs as a subprocess on 127.0.0.1.
The schemathesis command line then runs every phase that applies (coverage: boundary values and every
undeclared method of each route; fuzzing: ``--max-examples`` schema-valid and schema-violating requests per
route) with every check but ``positive_data_acceptance`` (the schema cannot say which prompts fit the
context or that text must be valid Unicode: those schema-valid requests are refused with 400). Positive
requests name the served model three times in four (a schemathesis dictionary), or nearly all would be 404,
and half of them ask for a stream (``fuzz_hooks.py``: schemathesis alone rarely draws ``"stream": true``).

Afterwards every stream recorded (HAR report) is checked event by event against the chunk schema the route
declares (``rewardlab.serve.openapi.stream_errors``), the server must still answer ``/health``, and its log
must hold no traceback. Prints the test-case counts, the statuses seen per route and any failure; exits 1
on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from server_process import ServerProcess

from rewardlab.serve.openapi import stream_errors

KEY = "fuzz-key"
CONFIG = """
seed = {seed}
max-stream-events = 100000
[auth.openapi.HTTPBearer]
bearer = "{key}"
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 413]
[dictionaries.served]
values = ["tiny"]
[parameters]
"body.model" = {{ dictionary = "served", probability = 0.75 }}
"""


def start_server(adapters: Path, log: Path) -> ServerProcess:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "rewardlab.cli", "serve", "--model", "tiny", "--port", str(port),
                "--api-key", KEY, "--allow-runtime-adapters", "--adapter-dir", str(adapters),
                "--set", "max_n=2", "--set", "max_tokens=8"]  # fmt: skip

    server = ServerProcess("rewardlab", command, threads=1, log=log)
    server.wait_ready(timeout=180)
    return server


def statuses_and_streams(har: Path, openapi: dict) -> tuple[Counter, int, list[str]]:
    """(method, route, status) counts of every request recorded, streams checked, what was wrong with them."""
    seen: Counter = Counter()
    streams, problems = 0, []
    for entry in json.loads(har.read_text())["log"]["entries"]:
        method, path = entry["request"]["method"], urlsplit(entry["request"]["url"]).path
        response = entry["response"]
        seen[(method, path, response["status"])] += 1
        content = response.get("content", {})
        if "text/event-stream" in content.get("mimeType", "") and response["status"] == 200:
            streams += 1
            problems += [
                f"{path}: {error}" for error in stream_errors(openapi, path, content.get("text", ""))
            ]
    return seen, streams, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=200, help="fuzzing examples per route and mode")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", help="a directory to keep the reports and the server's log in")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        (root / "adapters").mkdir(exist_ok=True)
        config = root / "schemathesis.toml"
        config.write_text(CONFIG.format(seed=args.seed, key=KEY))
        server = start_server(root / "adapters", root / "server.log")
        try:
            openapi = httpx.get(f"{server.url}/openapi.json").json()
            started = time.perf_counter()
            schemathesis = str(Path(sys.executable).parent / "schemathesis")  # the one beside this Python
            command = [schemathesis, "--config-file", str(config), "--no-color", "run"]
            command += [f"{server.url}/openapi.json", "--checks", "all", "--workers", "1"]
            command += [
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                str(args.max_examples),
            ]
            command += ["--report", "json,har", "--report-json-path", str(root / "report.json")]
            command += ["--report-har-path", str(root / "report.har")]
            # cwd: schemathesis keeps a cache directory where it runs.
            here = str(Path(__file__).resolve().parent)
            env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks"}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
            run = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env)
            seconds = time.perf_counter() - started
            alive = server.process.poll() is None and httpx.get(f"{server.url}/health").status_code == 200
        finally:
            server.stop()
        report = json.loads((root / "report.json").read_text())
        seen, streams, problems = statuses_and_streams(root / "report.har", openapi)
        tracebacks = (root / "server.log").read_text().count("Traceback")

    cases = report.get("test_cases", {})
    print(
        f"schemathesis {report.get('schemathesis_version')}, seed {args.seed}, --max-examples "
        f"{args.max_examples}, phases: "
        + ", ".join(f"{name} {phase['status']}" for name, phase in report.get("phases", {}).items())
    )
    print(
        f"{cases.get('generated', 0)} test cases ({sum(seen.values())} requests) in {seconds:.0f} s: "
        f"{cases.get('with_failures', 0)} failing, {len(report.get('failures', []))} unique failures, "
        f"{len(report.get('errors', []))} errors; {streams} streams checked, {len(problems)} bad; "
        f"5xx answers: {sum(n for (_, _, status), n in seen.items() if status >= 500)}; "
        f"server alive after: {alive}; tracebacks in its log: {tracebacks}"
    )
    print()
    print("| route | statuses (count) |")
    print("|---|---|")
    declared = {(method.upper(), path) for path, ops in openapi["paths"].items() for method in ops}
    rows: dict[str, Counter] = {}
    for (method, path, status), n in seen.items():
        row = f"{method} {path}" if (method, path) in declared else "methods a route does not take"
        rows.setdefault(row, Counter())[status] += n
    for row, counts in sorted(rows.items(), key=lambda item: (item[0].startswith("methods"), item[0])):
        print(f"| {row} | " + ", ".join(f"{status}: {n}" for status, n in sorted(counts.items())) + " |")
    failed = run.returncode != 0 or problems or not alive or tracebacks
    if failed:
        print("\n" + run.stdout[-20000:] + "\n".join(problems[:20]), file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
