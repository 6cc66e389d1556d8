"""Who may change shared state (start or resume training, replace adapters, the study admin area).

Only whoever presents the secret in CBTCOMPARE_ADMIN_SECRET, checked on the server for every request.
The admin area is disabled when that variable is unset, shorter than MIN_SECRET_LENGTH, or when
CBTCOMPARE_PUBLIC_DEMO=1 (a public Space: every such write refused, whatever secret is given). Wrong
secrets are counted per client and for the whole server; too many in a window lock the admin area out
(for that client, or for everyone) until the lockout ends, even for the right secret, so it cannot be
guessed. The secret is compared in constant time and never logged, stored or echoed.
This module never imports gradio.
"""

from __future__ import annotations

import hmac
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

ADMIN_SECRET_ENV = "CBTCOMPARE_ADMIN_SECRET"
PUBLIC_DEMO_ENV = "CBTCOMPARE_PUBLIC_DEMO"
MIN_SECRET_LENGTH = 16
UNKNOWN_CLIENT = "unknown client"
# Serving modes whose pages carry the admin panel: a rating app shows raters the Rate tab and nothing else.
ADMIN_PANEL_MODES = frozenset({"full"})


class AdminRefused(PermissionError):
    """A write that needs the admin secret was refused: disabled here, no secret, or a wrong one."""


class AdminLockedOut(AdminRefused):
    """Too many wrong secrets: refused until `retry_after_s` seconds from now."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class AttemptLimits:
    """How many wrong secrets are allowed in `window_s`, per client and overall, before a lockout."""

    per_client: int = 10
    overall: int = 100
    window_s: float = 900.0
    lockout_s: float = 900.0


def public_demo() -> bool:
    return os.environ.get(PUBLIC_DEMO_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def configured_secret() -> str:
    return os.environ.get(ADMIN_SECRET_ENV, "").strip()


def disabled_reason() -> str | None:
    """Why the admin area is off on this server (None when a usable secret is configured)."""
    if public_demo():
        return (f"This is a public demo ({PUBLIC_DEMO_ENV}=1): training, replacing adapters and the admin area "
                "are switched off. Run the app yourself to use them.")
    secret = configured_secret()
    if not secret:
        return f"The admin area is disabled: set {ADMIN_SECRET_ENV} on the server to enable it."
    if len(secret) < MIN_SECRET_LENGTH:
        return (f"The admin area is disabled: {ADMIN_SECRET_ENV} is {len(secret)} characters long and must be at "
                f"least {MIN_SECRET_LENGTH} (make one with: python -c \"import secrets; "
                "print(secrets.token_urlsafe(24))\").")
    return None


def admin_enabled() -> bool:
    return disabled_reason() is None


def admin_panel_allowed(mode: str) -> bool:
    """Whether an app served in `mode` (CBTCOMPARE_MODE) may carry the admin panel at all."""
    return mode in ADMIN_PANEL_MODES


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class AdminGate:
    """Checks admin secrets and counts the wrong ones (thread-safe; one per server process)."""

    def __init__(self, limits: AttemptLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or AttemptLimits()
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, _Failures] = {}
        self._overall = _Failures()

    def require(self, given: str | None, client: str | None = None) -> None:
        """Return quietly for the right secret; AdminRefused (saying why, never the secret) otherwise."""
        reason = disabled_reason()
        if reason:
            raise AdminRefused(reason)
        client = client or UNKNOWN_CLIENT
        with self._lock:
            now = self._clock()
            self._raise_if_locked(client, now)
            if not given or not given.strip():
                raise AdminRefused("Wrong admin secret: none was given. Enter the admin secret first.")
            if hmac.compare_digest(given.strip().encode(), configured_secret().encode()):
                self._clients.pop(client, None)
                return
            self._count_failure(client, now)

    def _raise_if_locked(self, client: str, now: float) -> None:
        for failures, whom in ((self._overall, "on this server"), (self._clients.get(client), "from this client")):
            if failures is not None and failures.locked_until > now:
                wait = math.ceil(failures.locked_until - now)
                raise AdminLockedOut(
                    f"Too many wrong admin secrets {whom}: the admin area is locked; try again in {wait} s.", wait
                )

    def _count_failure(self, client: str, now: float) -> None:
        limits = self.limits
        self._forget_before(now - limits.window_s)
        mine = self._clients.setdefault(client, _Failures())
        left = None
        for failures, limit in ((mine, limits.per_client), (self._overall, limits.overall)):
            failures.times.append(now)
            if len(failures.times) >= limit:
                failures.locked_until = now + limits.lockout_s
                failures.times.clear()
            else:
                left = min(left if left is not None else limit, limit - len(failures.times))
        if mine.locked_until > now or self._overall.locked_until > now:
            self._raise_if_locked(client, now)
        raise AdminRefused(f"Wrong admin secret ({left} more wrong tries before a {int(limits.lockout_s)} s lockout).")

    def _forget_before(self, cutoff: float) -> None:
        for failures in (*self._clients.values(), self._overall):
            while failures.times and failures.times[0] < cutoff:
                failures.times.popleft()
        stale = [c for c, f in self._clients.items() if not f.times and f.locked_until <= cutoff]
        for client in stale:
            del self._clients[client]


_SERVER_GATE = AdminGate()


def require_admin(given: str | None, client: str | None = None) -> None:
    """The server's gate: return quietly for the right secret; AdminRefused otherwise (see AdminGate)."""
    _SERVER_GATE.require(given, client)
