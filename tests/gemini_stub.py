"""A local stand-in for the Gemini API (generativelanguage.googleapis.com), speaking its REST wire format.

No Gemini service can run here, so tests point the real google-genai SDK at this server instead. It
answers `POST /{version}/models/{model}:generateContent` with one GenerateContentResponse JSON, and
`:streamGenerateContent?alt=sse` with Server-Sent Events (`data: {GenerateContentResponse}` frames, the
last one carrying finishReason and the full usageMetadata; no [DONE] sentinel), chunked like Google's.

Its "model" is deterministic and simple: the reply is "You said: <the last user text>", cut at
`maxOutputTokens` (a token is a whitespace-separated word here) and at `stopSequences`. With
`responseMimeType: application/json` and a `responseSchema` (Gemini's OpenAPI subset, upper-case types)
or a `responseJsonSchema`, the reply is the smallest instance of that schema, so output is constrained
like the real service's. Errors use Google's JSON error format (`{"error": {"code", "message", "status",
"details"}}`): a wrong `x-goog-api-key` gets 400 INVALID_ARGUMENT / API_KEY_INVALID (echoing the bad key
in a DebugInfo detail, as the real service can), a missing key 403 PERMISSION_DENIED, an unknown model 404
NOT_FOUND, an over-long prompt 400 INVALID_ARGUMENT, and tests can script 401/429/500/503 answers and delays.

Every request is recorded. This is test code: it must never be used as a model anywhere else.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
DEFAULT_MESSAGES = {
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential.",
    403: "Method doesn't allow unregistered callers (callers without established identity). Please use API Key "
    "or other form of API consumer identity to call this API.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
PATH = re.compile(r"^/(?P<version>v1(?:beta|alpha)?)/models/(?P<model>[^/:]+):(?P<method>\w+)$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: dict | None


@dataclass
class ScriptedError:
    status: int
    message: str | None = None
    retry_delay: str | None = None  # a google.protobuf.Duration, e.g. "0.1s", sent in a RetryInfo detail

    def payload(self) -> dict:
        details: list[dict] = []
        if self.retry_delay is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": self.retry_delay})
        return error_payload(self.status, self.message or DEFAULT_MESSAGES.get(self.status, "error"), details)


def error_payload(status: int, message: str, details: list[dict] | None = None) -> dict:
    error: dict = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def schema_instance(schema: dict) -> object:
    """The smallest value that satisfies `schema` (Gemini's Schema subset or a plain JSON schema)."""
    kind = str(schema.get("type", "object" if "properties" in schema else "string")).lower()
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "anyOf" in schema:
        return schema_instance(schema["anyOf"][0])
    if kind == "object":
        properties: dict = schema.get("properties", {})
        order = schema.get("propertyOrdering") or schema.get("property_ordering") or list(properties)
        return {name: schema_instance(properties[name]) for name in order}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        return [schema_instance(schema.get("items", {"type": "string"})) for _ in range(count)]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        value = low if low is not None else (min(0, high) if high is not None else 0)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    return "x" * max(int(schema.get("minLength", 1)), 1)


class GeminiStub:
    """The server; `base_url` is what the SDK's HttpOptions(base_url=...) takes."""

    def __init__(self, *, api_key: str = "stub-key-0123456789abcdef", models: tuple[str, ...] = ("gemini-stub",)):
        self.api_key = api_key
        self.models = set(models)
        self.max_input_tokens = 1000
        self.delay_s = 0.0  # how long to wait before answering (a timeout test sets it above the client's)
        self.requests: list[RecordedRequest] = []
        self._errors: deque[ScriptedError] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
                pass

            def do_POST(self) -> None:
                stub._handle(self)

            def do_GET(self) -> None:
                stub._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.05,), name="gemini-stub", daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def fail_next(self, status: int, times: int = 1, *, message: str | None = None, retry_delay: str | None = None):
        """Answer the next `times` requests with a Google-format error of this HTTP status."""
        with self._lock:
            self._errors.extend(ScriptedError(status, message, retry_delay) for _ in range(times))

    def generation_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- the wire ------------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        record = RecordedRequest(
            method=handler.command,
            path=url.path,
            query=parse_qs(url.query),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(record)
            scripted = self._errors.popleft() if self._errors else None
        if self.delay_s and self._closing.wait(self.delay_s):
            return
        if scripted is not None:
            self._send_json(handler, scripted.status, scripted.payload())
            return
        status, payload = self._check(record)
        if status != 200:
            self._send_json(handler, status, payload)
            return
        match = PATH.match(url.path)
        assert match is not None
        pieces, finish, prompt_tokens = self._generate(record.body or {})
        if match["method"] == "streamGenerateContent":
            if record.query.get("alt") == ["sse"]:
                self._send_sse(handler, match["model"], pieces, finish, prompt_tokens)
            else:  # without alt=sse Google answers a JSON array of responses
                frames = self._frames(match["model"], pieces, finish, prompt_tokens)
                self._send_json(handler, 200, frames)
            return
        response = self._response(match["model"], ["".join(pieces)], finish, prompt_tokens, final=True)
        self._send_json(handler, 200, response)

    def _check(self, record: RecordedRequest) -> tuple[int, dict]:
        key = record.headers.get("x-goog-api-key")
        if not key:
            return 403, error_payload(403, DEFAULT_MESSAGES[403])
        if key != self.api_key:
            return 400, error_payload(
                400,
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    },
                    {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": f"Invalid API key: {key}"},
                ],
            )
        match = PATH.match(record.path)
        if record.method != "POST" or match is None:
            return 404, error_payload(404, f"Method not found: {record.method} {record.path}")
        if match["method"] not in ("generateContent", "streamGenerateContent"):
            return 404, error_payload(404, f"Method not found: {match['method']}")
        if match["model"] not in self.models:
            return 404, error_payload(
                404,
                f"models/{match['model']} is not found for API version {match['version']}, or is not supported for "
                "generateContent. Call ListModels to see the list of available models and their supported methods.",
            )
        body = record.body
        if not isinstance(body, dict) or not body.get("contents"):
            return 400, error_payload(400, "* GenerateContentRequest.contents: contents is not specified")
        prompt_tokens = _count_prompt_tokens(body)
        if prompt_tokens > self.max_input_tokens:
            return 400, error_payload(
                400,
                f"The input token count ({prompt_tokens}) exceeds the maximum number of tokens allowed "
                f"({self.max_input_tokens}).",
            )
        return 200, {}

    def _generate(self, body: dict) -> tuple[list[str], str, int]:
        """The reply as streamed pieces, its finishReason, and the prompt's token count."""
        config = body.get("generationConfig") or {}
        prompt_tokens = _count_prompt_tokens(body)
        if config.get("responseMimeType") == "application/json" and (
            "responseSchema" in config or "responseJsonSchema" in config
        ):
            schema = config.get("responseSchema") or config.get("responseJsonSchema")
            text = json.dumps(schema_instance(schema))
            return [text[i : i + 8] for i in range(0, len(text), 8)], "STOP", prompt_tokens
        user_texts = [
            part.get("text", "")
            for content in body["contents"]
            if content.get("role", "user") == "user"
            for part in content.get("parts", [])
        ]
        words = f"You said: {user_texts[-1] if user_texts else ''}".split()
        finish = "STOP"
        limit = config.get("maxOutputTokens")
        if limit is not None and len(words) > int(limit):
            words, finish = words[: int(limit)], "MAX_TOKENS"
        pieces = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        text = "".join(pieces)
        for stop in config.get("stopSequences") or []:
            if stop and stop in text:
                text, finish = text[: text.index(stop)], "STOP"
                pieces = [text[i : i + 6] for i in range(0, len(text), 6)]
        return pieces, finish, prompt_tokens

    def _frames(self, model: str, pieces: list[str], finish: str, prompt_tokens: int) -> list[dict]:
        pieces = pieces or [""]
        return [
            self._response(model, pieces[: i + 1], finish, prompt_tokens, final=i == len(pieces) - 1, only_last=True)
            for i in range(len(pieces))
        ]

    @staticmethod
    def _response(
        model: str, pieces: list[str], finish: str, prompt_tokens: int, *, final: bool, only_last: bool = False
    ) -> dict:
        text = pieces[-1] if only_last else "".join(pieces)
        candidate: dict = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        usage: dict = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
        if final:
            completion = len("".join(pieces).split())
            candidate["finishReason"] = finish
            usage = {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": completion,
                "totalTokenCount": prompt_tokens + completion,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
            }
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:20],
        }

    def _send_sse(self, handler: BaseHTTPRequestHandler, model: str, pieces: list[str], finish: str, prompt: int):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for frame in self._frames(model, pieces, finish, prompt):
            event = f"data: {json.dumps(frame)}\r\n\r\n".encode()
            handler.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    @staticmethod
    def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: object) -> None:
        data = json.dumps(payload, indent=2).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _count_prompt_tokens(body: dict) -> int:
    texts = [part.get("text", "") for content in body.get("contents", []) for part in content.get("parts", [])]
    system = body.get("systemInstruction") or {}
    texts += [part.get("text", "") for part in system.get("parts", [])]
    return sum(len(text.split()) for text in texts)
