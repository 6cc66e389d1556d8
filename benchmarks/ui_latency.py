"""Time to first token through the running app (gradio_client, streaming) vs calling the backend directly.

Both sides do the same work: the same two models (smollm2-instruct and smollm2-cbt-prompted), the same
system prompt, sampling and seed, streaming at once; the time counted is until pane A's first token.
Runs alternate app/direct; medians over ROUNDS. Last line: ratio=<app median / direct median>. Target <= 1.2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import _common
from gradio_client import Client

from cbtcompare.models.base import Sampling
from cbtcompare.models.registry import Registry
from cbtcompare.prompts import resolve_system_prompt
from cbtcompare.seeds import derive_seed
from cbtcompare.transcript import Turn, therapist_messages

ROUNDS = 7
MODELS = ("smollm2-instruct", "smollm2-cbt-prompted")
PROMPT = "You are a supportive therapist. Keep replies short."
MAX_TOKENS = 16


def start_app(data_dir: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "CBTCOMPARE_DATA_DIR": str(data_dir),
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=_common.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the app did not start")


def app_first_token(url: str, message: str, seed: int) -> float:
    client = Client(url, verbose=False)
    started = time.perf_counter()
    job = client.submit(message, *MODELS, "(none)", PROMPT, 0.7, 0.95, MAX_TOKENS, seed, api_name="/send")
    for output in job:
        pane_a = output[5]
        if len(pane_a) >= 2 and pane_a[-1]["role"] == "assistant" and pane_a[-1]["content"]:
            elapsed = time.perf_counter() - started
            job.result()
            return elapsed
    raise RuntimeError("no token arrived through the app")


def direct_first_token(registry: Registry, message: str, seed: int) -> float:
    first: list[float] = []
    started = time.perf_counter()

    def run(name: str) -> None:
        spec = registry.spec(name)
        prompt = resolve_system_prompt(spec.system_prompt, PROMPT)
        messages = therapist_messages([Turn(role="patient", text=message)], prompt.text)
        sampling = Sampling(
            temperature=0.7, top_p=0.95, max_tokens=MAX_TOKENS, seed=derive_seed(seed, "therapist", 1, 0)
        )
        for _ in registry.load(name).stream(messages, sampling):
            if name == MODELS[0] and not first:
                first.append(time.perf_counter() - started)

    threads = [threading.Thread(target=run, args=(name,)) for name in MODELS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return first[0]


def main() -> None:
    registry = Registry.from_files()
    for name in MODELS:
        registry.load(name)
    with tempfile.TemporaryDirectory() as data:
        process, url = start_app(Path(data))
        try:
            app_first_token(url, "warm up", 0)
            direct_first_token(registry, "warm up", 0)
            app_times, direct_times = [], []
            for round_index in range(ROUNDS):
                message = f"Round {round_index}: I keep worrying about my job."
                app_times.append(app_first_token(url, message, round_index))
                direct_times.append(direct_first_token(registry, message, round_index))
        finally:
            process.terminate()
            process.wait(timeout=30)
    app_median, direct_median = _common.median(app_times), _common.median(direct_times)
    print(f"direct backend: {direct_median * 1000:.0f} ms to first token (median of {ROUNDS})")
    print(f"through the app: {app_median * 1000:.0f} ms to first token (median of {ROUNDS})")
    print(f"ratio={app_median / direct_median:.3f}")


if __name__ == "__main__":
    main()
