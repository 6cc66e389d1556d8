"""Connections a person adds at run time (like Open WebUI's Connections page): an OpenAI-compatible endpoint,
a Gemini model, or a GGUF file (a path or an `hf:` reference), tested with a short completion and then
usable by name in every tab of that person's browser session.

What a connection holds stays on the server, per session (`ConnectionBook`, keyed by the session id the
UI passes in): an API key typed into the form lives in memory only, inside the one model object built
for it. It is never written to the store, a log, a spec (`api_key_env` stays unset, so provenance holds
no key) or any message (errors are scrubbed of it), and it is dropped when the session ends
(`ConnectionBook.end_session`). In a public demo (CBTCOMPARE_PUBLIC_DEMO=1) local files and endpoints on
this machine's network are refused. `SessionRegistry` puts a session's connections beside the shared
registry's models, so every caller that takes a registry sees them. This module never imports gradio.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from cbtcompare import access
from cbtcompare.config_errors import format_validation_error
from cbtcompare.models.base import ChatModel, Message, ModelError, ModelNotFound, ModelSpec, Sampling
from cbtcompare.models.registry import Availability, Registry, backend_class
from cbtcompare.redact import redact

ConnectionKind = Literal["openai", "gemini", "gguf"]
KIND_BACKENDS: dict[str, str] = {"openai": "openai", "gemini": "gemini", "gguf": "llamacpp"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_KEY_CHARS = 512
MAX_CONNECTIONS_PER_SESSION = 8
TEST_PROMPT = [Message("user", "Reply with one short friendly sentence.")]
TEST_SAMPLING = Sampling(temperature=0.0, max_tokens=12, seed=0)
TEST_TIMEOUT_S = 60.0


class ConnectionRefused(ValueError):
    """A connection that cannot be added: the message says what to change (and never holds a key)."""


class ConnectionRequest(BaseModel):
    """What the Models tab's form sends."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    kind: ConnectionKind = Field(description="openai (any OpenAI-compatible server), gemini, or gguf")
    name: str = Field(description="the name the pickers show, e.g. my-vllm-llama")
    model: str = Field(
        min_length=1, max_length=2000, description="the endpoint's model id, a Gemini model, or a GGUF path / hf: ref"
    )
    base_url: str | None = Field(None, max_length=2000, description="the endpoint URL (openai; optional for gemini)")
    api_key: SecretStr | None = Field(None, description="held in this session's memory only")


@dataclass(frozen=True)
class ConnectionCheck:
    """The result of a test completion: a short reply, or what went wrong in words."""

    ok: bool
    message: str
    seconds: float


@dataclass
class Connection:
    spec: ModelSpec
    api_key: SecretStr | None = None
    model: ChatModel | None = None
    last_check: ConnectionCheck | None = None

    def scrub(self, text: str) -> str:
        """`text` with this connection's key (and URL credentials) masked."""
        key = self.api_key.get_secret_value() if self.api_key else ""
        if key:
            text = text.replace(key, "***")
        return redact(text)


def _refuse_private_host(url: str) -> None:
    host = (urlsplit(url).hostname or "").lower()
    if host in {"localhost", ""} or host.endswith(".localhost") or host.endswith(".local"):
        raise ConnectionRefused(f"this public demo does not connect to {host or 'a URL without a host'}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
        raise ConnectionRefused("this public demo does not connect to addresses on its own network")


def _is_local_file(weights: str) -> bool:
    return not weights.startswith("hf:")


def spec_for(request: ConnectionRequest, *, public_demo: bool) -> ModelSpec:
    """The ModelSpec a request describes (no key in it); ConnectionRefused saying what to change."""
    if not NAME_PATTERN.match(request.name):
        raise ConnectionRefused(
            "name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. my-vllm)"
        )
    key = request.api_key.get_secret_value().strip() if request.api_key else ""
    if len(key) > MAX_KEY_CHARS:
        raise ConnectionRefused(f"api key: longer than {MAX_KEY_CHARS} characters; paste the key alone")
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ConnectionRefused("api key: holds spaces or control characters; paste the key alone")
    base_url = request.base_url or None
    if request.kind == "openai" and not base_url:
        raise ConnectionRefused("base URL: an OpenAI-compatible endpoint needs one, e.g. http://127.0.0.1:8000/v1")
    if base_url:
        if request.kind == "gguf":
            raise ConnectionRefused("base URL: a GGUF file runs here; leave the URL empty")
        if urlsplit(base_url).scheme not in {"http", "https"} or not urlsplit(base_url).hostname:
            raise ConnectionRefused("base URL: must start with http:// or https:// and name a host")
        if public_demo:
            _refuse_private_host(base_url)
    if request.kind == "gemini" and not key:
        raise ConnectionRefused("api key: a Gemini model needs one")
    if request.kind == "gguf":
        if key:
            raise ConnectionRefused("api key: a GGUF file runs here and takes no key; leave it empty")
        if public_demo and _is_local_file(request.model):
            raise ConnectionRefused(
                f"this is a public demo ({access.PUBLIC_DEMO_ENV}=1): local files cannot be added; "
                "use an hf:owner/repo:file.gguf reference"
            )
    try:
        return ModelSpec(
            name=request.name,
            backend=KIND_BACKENDS[request.kind],  # type: ignore[arg-type]
            weights=request.model,
            base_url=base_url,
            timeout_s=TEST_TIMEOUT_S if request.kind != "gguf" else 120.0,
            max_retries=0 if request.kind != "gguf" else 3,
            description=f"added in this browser session ({request.kind})",
        )
    except ValidationError as exc:
        raise ConnectionRefused(format_validation_error(exc, "connection")) from None


def build_model(connection: Connection) -> ChatModel:
    """The loaded model for a connection, holding its key (if any) in memory only."""
    spec = connection.spec
    key = connection.api_key.get_secret_value().strip() if connection.api_key else ""
    if spec.backend == "openai":
        return _openai_with_key(spec, key)
    if spec.backend == "gemini":
        return _gemini_with_key(spec, key)
    return backend_class(spec.backend)(spec)


def _openai_with_key(spec: ModelSpec, key: str) -> ChatModel:
    from cbtcompare.models.openai_compat import OpenAICompatModel

    model = OpenAICompatModel(spec)  # api_key_env unset: a placeholder key, replaced below
    if key:
        # The backends read keys from the environment only (a request for a constructor argument is open);
        # a copy of the client with this key, and the key its error scrubber masks.
        model._client = model._client.with_options(api_key=key)  # noqa: SLF001
        model._api_key = key  # noqa: SLF001
    return model


def _gemini_with_key(spec: ModelSpec, key: str) -> ChatModel:
    from google import genai
    from google.genai import types

    from cbtcompare.models import gemini as gemini_backend

    model = gemini_backend.GeminiModel.__new__(gemini_backend.GeminiModel)
    ChatModel.__init__(model, spec)
    # Mirrors GeminiModel.__init__ with the key passed in rather than read from the environment.
    model._types = types  # noqa: SLF001
    model._key_env = "the key entered on the Models tab"  # noqa: SLF001 - named in the "key refused" message
    model._api_key = key  # noqa: SLF001
    model.base_url = spec.base_url or gemini_backend.GOOGLE_ENDPOINT
    model._client = genai.Client(  # noqa: SLF001
        vertexai=False,
        api_key=key,
        http_options=types.HttpOptions(
            base_url=model.base_url,
            api_version=gemini_backend.API_VERSION,
            timeout=max(1, round(spec.timeout_s * 1000)),
        ),
    )
    model._transport = gemini_backend.TransportErrors.load()  # noqa: SLF001
    return model


def check_connection(connection: Connection) -> ConnectionCheck:
    """A short completion through the connection (loading it first); never raises for a model failure."""
    started = time.perf_counter()
    try:
        if connection.model is None:
            connection.model = build_model(connection)
        reply = connection.model.complete(TEST_PROMPT, TEST_SAMPLING).strip()
    except ModelError as exc:
        check = ConnectionCheck(False, connection.scrub(str(exc)), time.perf_counter() - started)
    except (OSError, ValueError, RuntimeError) as exc:  # a client library's own error type
        check = ConnectionCheck(False, connection.scrub(f"{type(exc).__name__}: {exc}"), time.perf_counter() - started)
    else:
        if reply:
            check = ConnectionCheck(True, connection.scrub(reply[:200]), time.perf_counter() - started)
        else:
            check = ConnectionCheck(False, "the model answered with no text", time.perf_counter() - started)
    connection.last_check = check
    return check


@dataclass
class SessionConnections:
    """One browser session's connections, by name."""

    connections: dict[str, Connection] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self) -> list[str]:
        with self.lock:
            return list(self.connections)

    def get(self, name: str) -> Connection | None:
        with self.lock:
            return self.connections.get(name)

    def load(self, name: str) -> ChatModel:
        connection = self.get(name)
        if connection is None:
            raise ModelNotFound(f"no connection named {name!r} in this session")
        with self.lock:
            if connection.model is None:
                connection.model = build_model(connection)
            return connection.model

    def remove(self, name: str) -> bool:
        with self.lock:
            connection = self.connections.pop(name, None)
        if connection is not None:
            _close(connection)
        return connection is not None

    def close(self) -> None:
        with self.lock:
            connections, self.connections = list(self.connections.values()), {}
        for connection in connections:
            _close(connection)


def _close(connection: Connection) -> None:
    model, connection.model, connection.api_key = connection.model, None, None
    if model is not None:
        model.close()


class ConnectionBook:
    """Every live session's connections (thread-safe; one per app)."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionConnections] = {}
        self._lock = threading.Lock()

    def session(self, session_id: str) -> SessionConnections:
        with self._lock:
            return self._sessions.setdefault(session_id, SessionConnections())

    def peek(self, session_id: str | None) -> SessionConnections | None:
        if not session_id:
            return None
        with self._lock:
            return self._sessions.get(session_id)

    def add(
        self, session_id: str, request: ConnectionRequest, registry: Registry, *, public_demo: bool | None = None
    ) -> tuple[Connection, ConnectionCheck]:
        """Add (or replace) a session connection and test it; ConnectionRefused when it cannot be added.
        A connection whose test fails is kept (so the person sees it and can fix or remove it)."""
        demo = access.public_demo() if public_demo is None else public_demo
        spec = spec_for(request, public_demo=demo)
        if spec.name in registry.names():
            raise ConnectionRefused(f"name: {spec.name!r} is a model of this app already; pick another name")
        mine = self.session(session_id)
        if spec.name not in mine.names() and len(mine.names()) >= MAX_CONNECTIONS_PER_SESSION:
            raise ConnectionRefused(f"a session holds at most {MAX_CONNECTIONS_PER_SESSION} connections; remove one")
        key = request.api_key.get_secret_value().strip() if request.api_key else ""
        connection = Connection(spec=spec, api_key=SecretStr(key) if key else None)
        mine.remove(spec.name)
        with mine.lock:
            mine.connections[spec.name] = connection
        return connection, check_connection(connection)

    def end_session(self, session_id: str | None) -> None:
        """Forget a session's connections: keys dropped, models closed."""
        if not session_id:
            return
        with self._lock:
            mine = self._sessions.pop(session_id, None)
        if mine is not None:
            mine.close()

    def sessions(self) -> int:
        with self._lock:
            return len(self._sessions)


class SessionRegistry:
    """The shared registry plus the current session's connections (resolved by `current_session()`, which
    the UI answers from the request being handled). Session names never shadow shared ones."""

    def __init__(self, base: Registry, book: ConnectionBook, current_session: Callable[[], str | None]) -> None:
        self.base = base
        self.book = book
        self.current_session = current_session

    def _mine(self) -> SessionConnections | None:
        return self.book.peek(self.current_session())

    def session_names(self) -> list[str]:
        mine = self._mine()
        return mine.names() if mine else []

    def names(self) -> list[str]:
        shared = self.base.names()
        return shared + [n for n in self.session_names() if n not in shared]

    def spec(self, name: str) -> ModelSpec:
        mine = self._mine()
        connection = mine.get(name) if mine and name not in self.base.names() else None
        return connection.spec if connection else self.base.spec(name)

    def availability(self, name: str) -> Availability:
        mine = self._mine()
        connection = mine.get(name) if mine and name not in self.base.names() else None
        if connection is None:
            return self.base.availability(name)
        check = connection.last_check
        ok = check is None or check.ok
        reason = "" if ok else f"the last test failed: {check.message}"  # type: ignore[union-attr]
        return Availability(name, connection.spec.backend, ok, reason, connection.spec.description)

    def available_names(self) -> list[str]:
        return [name for name in self.names() if self.availability(name).available]

    def load(self, name: str) -> ChatModel:
        mine = self._mine()
        if mine and name not in self.base.names() and mine.get(name) is not None:
            return mine.load(name)
        return self.base.load(name)

    def __getattr__(self, attribute: str) -> object:
        return getattr(self.base, attribute)  # add, close and anything the shared registry gains later
