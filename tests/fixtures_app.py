"""A real running app (`python app.py`) on a free local port, with its own data folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(data_dir: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "CBTCOMPARE_DATA_DIR": str(data_dir),
        **(extra_env or {}),
    }
    log = (data_dir / "app.log").open("w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited early:\n{(data_dir / 'app.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the app did not answer at {url} within 120 s")


@pytest.fixture(scope="session")
def app_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-data")


@pytest.fixture(scope="session")
def app_url(app_data_dir: Path) -> Iterator[str]:
    """The app with the shipped models plus two broken endpoints: one dead, one failing mid-stream."""
    from flaky_openai_server import start_flaky_server

    flaky, flaky_url = start_flaky_server()
    models = app_data_dir / "models.yaml"
    models.write_text(
        "models:\n"
        f"  - {{name: flaky-endpoint, backend: openai, weights: flaky, base_url: '{flaky_url}', max_retries: 0}}\n"
        "  - {name: dead-endpoint, backend: openai, weights: m, base_url: 'http://127.0.0.1:9/v1', max_retries: 0,"
        " timeout_s: 3}\n"
        "  - {name: missing-adapter, backend: llamacpp, weights: 'embedded:smollm2',"
        f" adapter: '{app_data_dir}/no-such-adapter.gguf'}}\n"
    )
    # The browser rating test reads long pairs: no minimum reading time on the shared app (see test_rating_mode_app).
    process, url = start_app(app_data_dir, {"CBTCOMPARE_MODELS": str(models), "CBTCOMPARE_READING_WPM": "1e9"})
    yield url
    flaky.shutdown()
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
