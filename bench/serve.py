"""Benchmark: `tunekit serve` vs a naive FastAPI endpoint that calls the model once per request, and
vs the model's own batched throughput with no HTTP at all, on the PyTorch and the ONNX runtime.

Both servers serve the same classifier (a LoRA adapter on the bundled MiniLM, trained once on 300
banking77 rows and cached under bench/results/, with its int8 ONNX export beside it, checked on 1,000
banking77 test rows) on loopback, each in its own uvicorn process (one worker) with the same thread
count. The naive server is what a user writes without tunekit: a plain `def` route (FastAPI's
threadpool) that calls `model.predict_proba([text])` on the same runtime. Clients (aiohttp, one
keep-alive connection each) send one text per request in a loop, texts from banking77's test split.

Per runtime (`--runtimes torch,onnx`):
- `raw_rows_per_second`: the limit. In a process of its own with the same threads, the model loaded
  as the server loads it answers full micro-batches of `--batch-size` test texts through the very
  function the server's micro-batcher calls (`serve.app.forward_rows`), back to back, no HTTP, from as
  many threads as the server runs micro-batches at once (`concurrent_batches`: 1 for torch, 2 for
  ONNX unless `--concurrent-batches` says otherwise).
- for 1, 8 and 32 concurrent clients: requests/s, p50 and p99 latency (ms) and failures of each
  server, tunekit's mean micro-batch size (from `/metrics`), and the ratios tunekit / naive and
  tunekit / raw (one text per request, so requests/s are rows/s).
- CPU per answered request of the server process (every thread: HTTP, JSON, the request log and the
  model) and of the load generator, read from /proc around each point; with the raw CPU per row,
  `cpu_bound_vs_raw` = raw CPU per row / (server + client CPU per request): the most `vs_raw` could
  reach on these cores even if they were never idle (the client shares them).
- `log`: after a graceful stop, every request tunekit acknowledged (warm-up included) is looked up in
  its `serving.db`; `lost` must be 0, like `failed`.
With `--long S`, a soak of S seconds at 32 clients on tunekit (first runtime), checked the same way
(`server_exit_code` -15 is normal: uvicorn re-raises SIGTERM after its graceful shutdown).

Prints one JSON line: the figures, then `ratios` (per runtime and client count, tunekit against the
naive endpoint and against the raw figure; ONNX against PyTorch).

    .venv/bin/python bench/serve.py [--seconds 10] [--threads 2] [--runtimes torch,onnx] [--concurrent-batches N] [--model DIR] [--long 60 [--no-compare]]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "banking77" / "data"
CACHED_MODEL = ROOT / "bench" / "results" / "serve-minilm-lora"
CLIENTS = (1, 8, 32)


# --- the model: trained once, then reused ---------------------------------------------------------

def trained_model(path: Path, rows: int = 300) -> Path:
    """A tunekit classifier directory (LoRA on bundled:minilm, 1 epoch on ``rows`` banking77 rows), trained if missing."""
    if (path / "tunekit.json").is_file():
        return path
    import random
    from types import SimpleNamespace

    import datasets

    from tunekit import train
    from tunekit.config import TunekitConfig

    with open(DATA / "train.csv", encoding="utf-8") as fh:
        data = list(csv.DictReader(fh))
    random.Random(0).shuffle(data)
    labels = json.loads((DATA / "categories.json").read_text())
    ids = {name: i for i, name in enumerate(labels)}

    def ds(part):
        return datasets.Dataset.from_dict({"id": [str(i) for i in range(len(part))], "text": [r["text"] for r in part],
                                           "label": [ids[r["category"]] for r in part]})

    splits = SimpleNamespace(train=ds(data[:rows]), validation=ds(data[rows:rows + 100]), test=None, labels=labels,
                             fingerprint="bench-serve", test_fingerprint="bench-serve")
    cfg = TunekitConfig.model_validate({
        "name": "bench-serve", "data": {"train": "unused.csv"}, "model": {"base": "bundled:minilm", "max_length": 64},
        "method": {"kind": "lora", "r": 16, "alpha": 32},
        "train": {"epochs": 1, "batch_size": 32, "learning_rate": 2e-3, "early_stopping_patience": 0, "device": "cpu"},
    })
    train.run(cfg, splits, path)
    return path


def onnx_export(path: Path, rows: int = 1000) -> None:
    """The int8 ONNX export beside the model (``path/onnx``), made if missing, checked on ``rows`` banking77 test rows
    (the bench's model has no frozen split in a workspace: these rows stand in for it)."""
    from types import SimpleNamespace

    import datasets

    from tunekit.models.onnx import export_dir
    from tunekit.pipeline.export_onnx import export_onnx

    if export_dir(path).is_dir():
        return
    labels = json.loads((DATA / "categories.json").read_text())
    with open(DATA / "test.csv", encoding="utf-8") as fh:
        test = list(csv.DictReader(fh))[:rows]
    ids = {name: i for i, name in enumerate(labels)}
    data = SimpleNamespace(test=datasets.Dataset.from_dict({"id": [str(i) for i in range(len(test))], "text": [r["text"] for r in test],
                                                             "label": [ids[r["category"]] for r in test]}),
                           labels=labels, test_fingerprint="bench-serve-test")
    result = export_onnx(path, data=data)
    print(f"ONNX export checked on {result.record.parity.rows} rows: {result.record.parity.model_dump_json()}", file=sys.stderr)


def raw_throughput(args) -> None:
    """Child process (``--raw RUNTIME``): the model loaded as the server loads it answers full micro-batches
    of ``batch_size`` test texts through the server's own batch function, back to back, for ``seconds``;
    prints {"rows_per_second": ...}."""
    from tunekit.serve import ServeSettings
    from tunekit.serve.app import forward_rows
    from tunekit.serve.loading import default_loader

    settings = ServeSettings(model=str(args.model), auth=False, runtime=args.raw, concurrent_batches=args.concurrent_batches)
    loaded = default_loader(settings)
    texts = test_texts()
    batches = [[(t, None) for t in texts[i:i + args.batch_size]] for i in range(0, len(texts) - args.batch_size + 1, args.batch_size)]
    for batch in batches[:3]:  # warm-up
        forward_rows(loaded, batch, args.batch_size)
    streams = settings.forward_concurrency  # as many passes at once as the server runs
    counts, started, cpu_started = [0] * streams, time.perf_counter(), time.process_time()

    def stream(k: int) -> None:
        i = 3 + k
        while time.perf_counter() - started < args.seconds:
            forward_rows(loaded, batches[i % len(batches)], args.batch_size)
            counts[k], i = counts[k] + args.batch_size, i + streams

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = sum(counts)
    cpu = time.process_time() - cpu_started
    print(json.dumps({"rows_per_second": round(rows / (time.perf_counter() - started), 1), "rows": rows, "streams": streams,
                      "cpu_ms_per_row": round(cpu / rows * 1000, 3)}))


def measure_raw(args, runtime: str) -> dict:
    cmd = [sys.executable, __file__, "--raw", runtime, "--model", str(args.model), "--threads", str(args.threads),
           "--batch-size", str(args.batch_size), "--seconds", str(args.seconds)] + concurrency_args(args)
    done = subprocess.run(cmd, env=child_env(args.threads), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"raw throughput ({runtime}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the servers (each runs in a child process: `--server tunekit|naive`) ------------------------

def run_tunekit_server(args) -> None:
    """What `tunekit serve DIR --no-auth --rate-limit-per-minute 0` runs (request log and metrics on)."""
    from tunekit.serve import ServeSettings
    from tunekit.serve.app import serve

    serve(ServeSettings(model=str(args.model), host="127.0.0.1", port=args.port, auth=False, workspace=args.workspace,
                        rate_limit_per_minute=0, batch_size=args.batch_size, max_wait_ms=args.max_wait_ms, runtime=args.runtime,
                        concurrent_batches=args.concurrent_batches))


def concurrency_args(args) -> list[str]:
    return ["--concurrent-batches", str(args.concurrent_batches)] if args.concurrent_batches else []


def run_naive_server(args) -> None:
    """The plain alternative: load once (on the same runtime), one forward pass per request, uvicorn's defaults."""
    import uvicorn
    from fastapi import FastAPI

    from tunekit.models import load_trained
    from tunekit.models.onnx import load_onnx

    model = load_trained(args.model) if args.runtime == "torch" else load_onnx(args.model)
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict:
        return {"ready": True}

    @app.post("/v1/classify")
    def classify(body: Body) -> dict:
        probs = model.predict_proba(body.inputs)  # the same answer as tunekit's: label, score and every probability
        return {"predictions": [{"label": model.labels[int(row.argmax())], "score": float(row.max()),
                                 "probabilities": dict(zip(model.labels, row.tolist()))} for row in probs]}

    uvicorn.run(app, host="127.0.0.1", port=args.port)


class Body(BaseModel):
    """The naive server's request body (at module level, so FastAPI resolves the annotation)."""

    inputs: list[str]


def child_env(threads: int) -> dict:
    # PASSIVE: OpenMP threads sleep instead of spinning between ops; on cores shared with other work,
    # spinning made every forward pass of either server take ~0.5 s whatever its size.
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads)}


class Server:
    """A server child process on a free loopback port; ``stop()`` sends SIGTERM and waits for a graceful exit."""

    def __init__(self, side: str, args, workspace: Path, runtime: str = "torch"):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.workspace = workspace
        self.output = open(workspace / f"{side}-server.log", "wb")  # noqa: SIM115 - open while the server runs; stop() closes it
        env = child_env(args.threads)
        cmd = [sys.executable, __file__, "--server", side, "--model", str(args.model), "--port", str(self.port),
               "--workspace", str(workspace), "--threads", str(args.threads), "--batch-size", str(args.batch_size),
               "--max-wait-ms", str(args.max_wait_ms), "--runtime", runtime] + concurrency_args(args)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.output, stderr=subprocess.STDOUT)

    async def wait_ready(self, session, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with session.get(f"{self.url}/readyz") as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.output.flush()
                tail = Path(self.output.name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.url} did not become ready; its output ends:\n{tail}")
            await asyncio.sleep(0.1)

    def stop(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.output.close()
        return code


# --- the client -------------------------------------------------------------------------------------

def test_texts() -> list[str]:
    with open(DATA / "test.csv", encoding="utf-8") as fh:
        return [r["text"] for r in csv.DictReader(fh)]


async def load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` workers, each on its own keep-alive connection, send one text per request until ``seconds`` pass."""
    import aiohttp

    latencies, ids, errors, failures = [], [], 0, []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)

    async def worker(offset: int, session) -> None:
        nonlocal errors
        i = offset
        while time.perf_counter() < deadline:
            body = {"inputs": [texts[i % len(texts)]]}
            i += clients
            started = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/classify", json=body) as r:
                    payload = await r.json()
                    ok = r.status == 200
            except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
                ok, payload = False, {"exception": repr(exc)}
            if ok:
                latencies.append(time.perf_counter() - started)
                if "id" in payload:
                    ids.append(payload["id"])
            else:
                errors += 1
                failures.append(payload)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(k, session) for k in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies) + errors, "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_quantile(latencies, 0.5) * 1000, 1), "p99_ms": round(_quantile(latencies, 0.99) * 1000, 1),
        "errors": errors, "ids": ids, "failures": failures[:3],
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``), every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def batch_stats(session, url: str) -> tuple[float, float]:
    """(sum, count) of tunekit's ``tunekit_batch_size{kind="classify"}`` histogram."""
    async with session.get(f"{url}/metrics") as r:
        text = await r.text()
    found = {}
    for part in ("sum", "count"):
        m = re.search(rf'^tunekit_batch_size_{part}\{{kind="classify"\}} (\S+)$', text, re.MULTILINE)
        found[part] = float(m.group(1)) if m else 0.0
    return found["sum"], found["count"]


# --- the runs -----------------------------------------------------------------------------------------

def logged(workspace: Path, ids: list[str]) -> dict:
    """How many of the acknowledged request ``ids`` are in the stopped server's ``serving.db``."""
    with sqlite3.connect(f"file:{workspace / 'serving.db'}?mode=ro", uri=True) as conn:
        logged_ids = {row[0] for row in conn.execute("SELECT id FROM requests")}
    found = sum(1 for i in ids if i in logged_ids)
    return {"acknowledged": len(ids), "logged": found, "lost": len(ids) - found, "log_rows": len(logged_ids)}


async def compare_side(side: str, runtime: str, args, texts: list[str], workspace: Path) -> dict:
    """One server, each client count in turn: warm-up, then ``args.seconds`` of load; tunekit's log checked after it stops."""
    import aiohttp

    server = Server(side, args, workspace, runtime)
    results, ids = {}, []
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
            for clients in CLIENTS:
                warm = await load(server.url, texts, clients, args.warmup)
                ids += warm["ids"]
                before = await batch_stats(session, server.url) if side == "tunekit" else None
                server_cpu, client_cpu = process_cpu_seconds(server.proc.pid), time.process_time()
                point = await load(server.url, texts, clients, args.seconds)
                answered = max(point["requests"] - point["errors"], 1)
                point["server_cpu_ms_per_request"] = round((process_cpu_seconds(server.proc.pid) - server_cpu) / answered * 1000, 3)
                point["client_cpu_ms_per_request"] = round((time.process_time() - client_cpu) / answered * 1000, 3)
                point["failed"] = point.pop("errors") + warm["errors"]
                if before is not None:
                    after = await batch_stats(session, server.url)
                    passes = after[1] - before[1]
                    point["mean_batch_size"] = round((after[0] - before[0]) / passes, 2) if passes else None
                    point["forward_passes"] = int(passes)
                ids += point.pop("ids")
                if not point["failures"]:
                    del point["failures"]
                results[clients] = point
    finally:
        exit_code = server.stop()
    if side == "tunekit":
        results["log"] = {**logged(workspace, ids), "server_exit_code": exit_code}
    return results


async def soak(args, texts: list[str], workspace: Path, runtime: str) -> dict:
    """``args.long`` seconds at 32 clients on tunekit; stop it gracefully; look every acknowledged id up in serving.db."""
    import aiohttp

    server = Server("tunekit", args, workspace, runtime)
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
            result = await load(server.url, texts, 32, args.long)
            total, passes = await batch_stats(session, server.url)
    finally:
        exit_code = server.stop()
    return {
        "runtime": runtime, "seconds": args.long, "clients": 32, "requests": result["requests"], "failures": result["errors"],
        "failure_examples": result["failures"], "requests_per_second": result["requests_per_second"],
        "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "mean_batch_size": round(total / passes, 2) if passes else None,
        **logged(workspace, result["ids"]), "server_exit_code": exit_code,
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


async def main_async(args) -> dict:
    texts = test_texts()
    out = {"benchmark": "serve", "model": "bundled:minilm (LoRA)", "threads": args.threads, "seconds": args.seconds,
           "batch_size": args.batch_size, "max_wait_ms": args.max_wait_ms, "load_before": os.getloadavg()}
    ratios: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in args.runtimes:
            if args.no_compare:
                break
            raw = measure_raw(args, runtime)
            figures, ratios[runtime] = {"raw_rows_per_second": raw["rows_per_second"], "raw_cpu_ms_per_row": raw["cpu_ms_per_row"],
                                        "concurrent_batches": raw["streams"]}, {}
            sides = {}
            for side in ("tunekit", "naive"):
                Path(tmp, runtime, side).mkdir(parents=True)
                sides[side] = await compare_side(side, runtime, args, texts, Path(tmp, runtime, side))
            figures["log"] = sides["tunekit"].pop("log")
            for clients in CLIENTS:
                t, n = sides["tunekit"][clients], sides["naive"][clients]
                figures[f"clients_{clients}"] = {"tunekit": t, "naive": n}
                ratios[runtime][f"clients_{clients}"] = {
                    "vs_naive": _ratio(t["requests_per_second"], n["requests_per_second"]),
                    "vs_raw": _ratio(t["requests_per_second"], raw["rows_per_second"]),
                    "p99_vs_naive": _ratio(t["p99_ms"], n["p99_ms"]),
                    # the most vs_raw could be on these cores if they were never idle: the model's CPU per row over
                    # everything one request costs in CPU (the server's, model included, and the load generator's)
                    "cpu_bound_vs_raw": _ratio(raw["cpu_ms_per_row"], t["server_cpu_ms_per_request"] + t["client_cpu_ms_per_request"]),
                }
            ratios[runtime]["failed"] = sum(p["failed"] for side in sides.values() for k, p in side.items() if k in CLIENTS)
            ratios[runtime]["lost"] = figures["log"]["lost"]
            out[runtime] = figures
        if {"torch", "onnx"} <= set(ratios):
            ratios["onnx_vs_torch"] = {
                "raw": _ratio(out["onnx"]["raw_rows_per_second"], out["torch"]["raw_rows_per_second"]),
                **{f"tunekit_clients_{c}": _ratio(out["onnx"][f"clients_{c}"]["tunekit"]["requests_per_second"],
                                                  out["torch"][f"clients_{c}"]["tunekit"]["requests_per_second"]) for c in CLIENTS},
                "tunekit_onnx_32_vs_naive_torch_32": _ratio(out["onnx"]["clients_32"]["tunekit"]["requests_per_second"],
                                                            out["torch"]["clients_32"]["naive"]["requests_per_second"]),
            }
        if args.long:
            Path(tmp, "soak").mkdir()
            out["soak"] = await soak(args, texts, Path(tmp, "soak"), args.runtimes[0])
    out["load_after"] = os.getloadavg()
    out["ratios"] = ratios
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a tunekit classifier directory (default: train one, cached in bench/results/)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each point")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    parser.add_argument("--batch-size", type=int, default=32, help="tunekit's batch_size")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="tunekit's max_wait_ms")
    parser.add_argument("--concurrent-batches", type=int, help="tunekit's concurrent_batches (default: the runtime's own)")
    parser.add_argument("--long", type=float, default=0.0, help="also soak tunekit at 32 clients for this many seconds")
    parser.add_argument("--no-compare", action="store_true", help="skip the tunekit vs naive points (with --long: the soak only)")
    parser.add_argument("--runtimes", default="torch,onnx", help="comma-separated runtimes to measure: torch, onnx")
    parser.add_argument("--server", choices=["tunekit", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--runtime", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--raw", choices=["torch", "onnx"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server or args.raw:  # child process: one server until SIGTERM, or the raw throughput
        import torch

        torch.set_num_threads(args.threads)
        if args.raw:
            return raw_throughput(args)
        (run_tunekit_server if args.server == "tunekit" else run_naive_server)(args)
        return
    args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    unknown = [r for r in args.runtimes if r not in ("torch", "onnx")]
    if unknown:
        parser.error(f"--runtimes: unknown {', '.join(unknown)}; use torch, onnx or both")
    args.model = trained_model(args.model or CACHED_MODEL).resolve()
    if "onnx" in args.runtimes:
        onnx_export(args.model)
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
