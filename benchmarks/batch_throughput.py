"""Simulation batch throughput against a local OpenAI-compatible server: concurrency 1 vs 4.

Starts llama-cpp-python's server on the embedded default GGUF, then, in this one process, runs the same
batch of 8 short sessions (4 curated profiles with scripted openings x 2 therapist variants, 2 therapist
turns and 1 patient reply each, 24 tokens a turn) twice, each time into a fresh store: once at concurrency
1, once at concurrency 4, alternating the order over BENCH_ROUNDS rounds (default 1; medians reported).
Reports sessions per minute for each and, on the last line, ratio=<sessions/min at concurrency 4 divided
by sessions/min at concurrency 1>. llama-cpp-python's server decodes one request at a time, so the gain
is bounded by the server (and the CPU cores): on a small machine expect a ratio near 1; a batching
server (vLLM, or llama.cpp's own server with --parallel) gains more.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import median

from cbtcompare.models.base import ModelSpec, Sampling
from cbtcompare.models.defaults import default_gguf_path
from cbtcompare.models.registry import Registry
from cbtcompare.simulate import BatchConfig, run_batch
from cbtcompare.store import Store

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
KEY_ENV = "CBTCOMPARE_BENCH_SERVER_KEY"
PROFILES = ["nurse-burnout", "reserved-retiree", "upset-student", "verbose-teacher"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(api_key: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf_path()), "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", "2048", "--api_key", api_key,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if json.load(response).get("data"):
                    return process, base_url
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise RuntimeError("llama_cpp.server did not start within 120 s")


def registry_for(base_url: str) -> Registry:
    def endpoint(name: str, **fields: object) -> ModelSpec:
        return ModelSpec(
            name=name, backend="openai", weights="smollm2", base_url=base_url, api_key_env=KEY_ENV,
            timeout_s=600, sampling=Sampling(max_tokens=24), **fields,
        )  # fmt: skip

    return Registry([endpoint("bench-base"), endpoint("bench-cbt-prompted", system_prompt="therapist_cbt"),
                     endpoint("bench-patient")])  # fmt: skip


def sessions_per_minute(registry: Registry, concurrency: int, folder: Path, round_index: int) -> float:
    config = BatchConfig(
        name=f"bench-c{concurrency}-r{round_index}", profiles=PROFILES, therapists=["bench-base", "bench-cbt-prompted"],
        patient="bench-patient", turns=2, seed=round_index, concurrency=concurrency,
    )  # fmt: skip
    store = Store(f"sqlite:///{folder / f'c{concurrency}-r{round_index}.sqlite'}")
    result = run_batch(config, registry, store)
    summary = result.summary()
    if summary["done"] != 8 or summary["concurrency"] != concurrency:
        raise RuntimeError(f"the batch did not run as planned: {summary}")
    print(f"  concurrency {concurrency}: 8 sessions in {result.seconds:.1f} s = {result.sessions_per_minute:.2f}/min")
    return result.sessions_per_minute


def main() -> None:
    api_key = f"sk-bench-{secrets.token_hex(8)}"
    os.environ[KEY_ENV] = api_key
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        process, base_url = start_server(api_key, folder / "server.log")
        try:
            registry = registry_for(base_url)
            results: dict[int, list[float]] = {1: [], 4: []}
            for round_index in range(ROUNDS):
                order = (1, 4) if round_index % 2 == 0 else (4, 1)
                print(f"round {round_index + 1}/{ROUNDS}")
                for concurrency in order:
                    results[concurrency].append(sessions_per_minute(registry, concurrency, folder, round_index))
            registry.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    one, four = median(results[1]), median(results[4])
    print(f"sessions/min (median of {ROUNDS}): concurrency 1 = {one:.2f}, concurrency 4 = {four:.2f}")
    print(f"ratio={four / one:.3f}")


if __name__ == "__main__":
    main()
