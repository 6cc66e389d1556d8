"""Fixtures for network endpoints: a real llama-cpp-python OpenAI-compatible server, fault injection in front
of it, endpoints that refuse or never answer, and the local Gemini REST stub.

The llama.cpp server is the real thing (`python -m llama_cpp.server`) serving the embedded default GGUF on
127.0.0.1 with an API key; it is started once per session and killed at teardown. Nothing here reaches the
internet, and no fixture leaves a process or a thread running after the session.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from gemini_stub import GeminiStub

from cbtcompare.models.defaults import default_gguf_path

SERVER_START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class LlamaServer:
    """A running llama-cpp-python server: its OpenAI base URL and the one key it accepts."""

    base_url: str
    api_key: str
    model_path: Path


def _wait_for_models(base_url: str, api_key: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"})
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200 and json.load(response).get("data"):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"llama_cpp.server did not answer GET /v1/models in {SERVER_START_TIMEOUT_S:g} s")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The real llama-cpp-python OpenAI-compatible server on the default GGUF, requiring an API key."""
    model_path = default_gguf_path()
    port = free_port()
    api_key = f"sk-test-{secrets.token_hex(16)}"
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048",
        "--api_key", api_key,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_for_models(base_url, api_key, process, log)
        yield LlamaServer(base_url=base_url, api_key=api_key, model_path=model_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Fault:
    """One scripted answer: an HTTP status with an OpenAI-style error body."""

    status: int
    message: str = "injected fault"
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        kind = "rate_limit_error" if self.status == 429 else "server_error" if self.status >= 500 else "invalid_request"
        return json.dumps({"error": {"message": self.message, "type": kind, "param": None, "code": self.code}}).encode()


class FaultProxy:
    """An HTTP proxy in front of a real server that first answers with scripted faults, then forwards.

    Every request is recorded (method, path, JSON body), so tests can see what a client actually sent.
    """

    def __init__(self, upstream: str, faults: list[Fault] | None = None):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.faults: deque[Fault] = deque(faults or [])
        self.requests: list[tuple[str, str, dict | None]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.05,), name="fault-proxy", daemon=True)
        self._thread.start()
        path = parts.path.rstrip("/")
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def posts(self) -> list[dict | None]:
        return [body for method, _, body in self.requests if method == "POST"]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append((handler.command, handler.path, json.loads(raw) if raw else None))
            fault = self.faults.popleft() if self.faults else None
        if fault is not None:
            body = fault.body()
            handler.send_response(fault.status)
            handler.send_header("Content-Type", "application/json")
            for name, value in fault.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            dropped = ("host", "content-length", "accept-encoding")
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in dropped}
            upstream.request(handler.command, handler.path, body=raw or None, headers=headers)
            response = upstream.getresponse()
            body = response.read()
        finally:
            upstream.close()
        handler.send_response(response.status)
        handler.send_header("Content-Type", response.getheader("Content-Type", "application/json"))
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def fault_proxy(llama_server: LlamaServer) -> Iterator[Callable[..., FaultProxy]]:
    """A factory: `fault_proxy(faults)` -> a FaultProxy in front of the real llama server, closed after the test."""
    made: list[FaultProxy] = []

    def make(faults: list[Fault] | None = None) -> FaultProxy:
        proxy = FaultProxy(llama_server.base_url, faults)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture
def closed_port_url() -> str:
    """An OpenAI-style URL on a local port nothing listens on (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture
def silent_endpoint_url() -> Iterator[str]:
    """A URL whose server accepts TCP connections (the kernel's backlog) but never answers a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        with contextlib.suppress(OSError):
            sock.close()


@pytest.fixture
def gemini_stub() -> Iterator[GeminiStub]:
    """A local HTTP server speaking Gemini's REST wire format (no Gemini service can run here)."""
    stub = GeminiStub()
    try:
        yield stub
    finally:
        stub.close()
