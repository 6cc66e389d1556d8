"""Mask secrets in text before it reaches a person, a log, a file or the browser.

Three layers, applied together by `redact`:
- credentials inside URLs of any scheme (`scheme://user:password@host`, a bare token as the user) and
  secret-named parameters (`password=`, `api_key=`, `token=`, `key=`...; also `"api_key": "..."` in JSON
  and `Bearer <token>`);
- the values of secret environment variables (API keys, tokens, CBTCOMPARE_ADMIN_SECRET, the password in
  CBTCOMPARE_DB_URL), wherever they appear, also percent-encoded or JSON-escaped.
When a stretch of text may or may not be a credential, it is masked: over-masking a log line is cheaper
than a leaked password. Text with no credential-shaped part comes back unchanged. This module never
raises on any input, never logs, and never imports gradio.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TextIO
from urllib.parse import quote, unquote

MASK = "***"
# A secret env value shorter than this is not masked everywhere: "1" or "yes" would mangle every message.
MIN_SECRET_VALUE_LENGTH = 6
SECRET_ENV_NAME = re.compile(r"(?i)(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?)")
URL_ENV_NAMES = ("CBTCOMPARE_DB_URL", "DATABASE_URL")

_SECRET_PARAM = (
    r"(?:[\w.-]*[_.-])?"
    r"(?:password|passwd|pwd|pass|secret|token|api[_-]?key|apikey|key|access[_-]?key|sig|signature|credentials?|auth)"
)
# What ends a URL in prose, logs or JSON. A raw space or quote inside a password is not a valid URL; the
# environment layer still masks such a password when it is the configured one.
_URL_TOKEN = re.compile(r"[^\s\"'<>`]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_SECRET_NAME = re.compile(rf"(?i){_SECRET_PARAM}")
# Candidate names are matched loosely and then checked against _SECRET_NAME: one cheap pattern per
# position keeps huge inputs linear and fast.
_PARAM_VALUE = re.compile(r"(?<![\w.-])(?P<name>[\w.-]+)=(?P<value>[^&\s\"'#;,]+)")
_JSON_FIELD = re.compile(r'(?P<name>"(?P<key>[\w.-]+)"\s*:\s*)"(?P<value>(?:[^"\\]|\\.)+)"')
_BEARER = re.compile(r"(?i)\b(?P<name>bearer\s+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})")
_USER_NAME = re.compile(r"[^:/?#]*")


def _split_credentials(token: str) -> tuple[str, str, str] | None:
    """(up to and including `scheme://`, the userinfo, from `@` on) for a URL token with credentials.

    The userinfo runs to the token's last `@`, so a password holding an unencoded `@` or `/` is still covered.
    """
    scheme = _SCHEME.search(token)
    if not scheme:
        return None
    at = token.rfind("@")
    if at < scheme.end():
        return None
    return token[: scheme.end()], token[scheme.end() : at], token[at:]


def _mask_url_token(match: re.Match[str]) -> str:
    token = match.group(0)
    parts = _split_credentials(token) if "@" in token else None
    if parts is None:
        return token
    head, userinfo, tail = parts
    user, colon, _password = userinfo.partition(":")
    if not _USER_NAME.fullmatch(user):
        return token  # an `@` further along the path (https://host/@scope/pkg), not credentials
    if colon:
        return f"{head}{user}:{MASK}{tail}"
    # No password part: the user field alone is often a token (https://TOKEN@github.com); mask it all.
    return f"{head}{MASK}{tail}"


def redact_url(url: str) -> str:
    """`url` with its password (or bare token user) and secret-named query values masked."""
    return _redact_patterns(url)


def _redact_patterns(text: str) -> str:
    if "://" in text:
        text = _URL_TOKEN.sub(_mask_url_token, text)
    if '"' in text:
        text = _JSON_FIELD.sub(
            lambda m: f'{m.group("name")}"{MASK}"' if _SECRET_NAME.fullmatch(m.group("key")) else m.group(0), text
        )
    if "=" in text:
        text = _PARAM_VALUE.sub(
            lambda m: f"{m.group('name')}={MASK}" if _SECRET_NAME.fullmatch(m.group("name")) else m.group(0), text
        )
    if "bearer" in text.lower():
        text = _BEARER.sub(lambda m: f"{m.group('name')}{MASK}", text)
    return text


def _url_password(url: str) -> str | None:
    parts = _split_credentials(url.strip())
    if parts is None:
        return None
    user, colon, password = parts[1].partition(":")
    return password if colon else user


def known_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Secret values configured in the environment, longest first, with their encoded spellings."""
    environ = os.environ if environ is None else environ
    values: set[str] = set()
    for name, value in environ.items():
        value = value.strip()
        if name in URL_ENV_NAMES or "://" in value:
            password = _url_password(value)
            if password:
                values.update({password, unquote(password)})
        elif SECRET_ENV_NAME.search(name):
            values.add(value)
    spellings: set[str] = set()
    for value in values:
        if len(value) >= MIN_SECRET_VALUE_LENGTH:
            spellings.update({value, quote(value, safe=""), json.dumps(value, ensure_ascii=False)[1:-1],
                              json.dumps(value)[1:-1]})
    return sorted((s for s in spellings if len(s) >= MIN_SECRET_VALUE_LENGTH), key=len, reverse=True)


def redact(text: object, secrets: Iterable[str] | None = None) -> str:
    """`text` (anything; str() of it) with URL credentials, secret parameters and known secret values masked."""
    try:
        value = text if isinstance(text, str) else str(text)
    except Exception:  # a broken __str__ must not turn an error report into a second error
        return f"<unprintable {type(text).__name__}>"
    for secret in known_secrets() if secrets is None else secrets:
        if secret:
            value = value.replace(secret, MASK)
    return _redact_patterns(value)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's final message (arguments merged in), its traceback and its stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a broken format string is reported by the handler itself
        masked = redact(message)
        if masked != message:  # untouched records keep their args (uvicorn's access formatter unpacks them)
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_REDACTING = RedactingFilter()


def install_log_redaction() -> None:
    """Run RedactingFilter on every log record as it is created, whatever logger or handler it goes to
    (uvicorn's and gradio's own handlers included). Safe to call more than once."""
    current = logging.getLogRecordFactory()
    if getattr(current, "redacting", False):
        return

    def redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _REDACTING.filter(record)
        return record

    redacting_factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)


class RedactingStream(io.TextIOBase):
    """A text stream that masks secrets line by line before passing text on (for stderr/stdout, where
    servers print tracebacks without going through logging)."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        end = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
        if end >= 0:
            complete, self._pending = self._pending[: end + 1], self._pending[end + 1 :]
            self.inner.write(redact(complete))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.inner.write(redact(self._pending))
            self._pending = ""
        self.inner.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")


def install_stream_redaction(names: tuple[str, ...] = ("stdout", "stderr")) -> None:
    """Wrap the named sys streams in RedactingStream (once each)."""
    for name in names:
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
