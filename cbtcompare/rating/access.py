"""Who may use the study admin area: whoever presents the secret in CBTCOMPARE_ADMIN_SECRET.

With the variable unset (or empty) the admin area is refused to everyone. The secret is compared in
constant time and never logged, stored or echoed. This module never imports gradio.
"""

from __future__ import annotations

import hmac
import os

ADMIN_SECRET_ENV = "CBTCOMPARE_ADMIN_SECRET"


class AdminRefused(PermissionError):
    """The admin area was refused: no secret configured, or a wrong one given."""


def admin_enabled() -> bool:
    return bool(os.environ.get(ADMIN_SECRET_ENV, "").strip())


def require_admin(given: str | None) -> None:
    """Return quietly for the right secret; AdminRefused (saying why, never the secret) otherwise."""
    expected = os.environ.get(ADMIN_SECRET_ENV, "").strip()
    if not expected:
        raise AdminRefused(f"The study admin area is disabled: set {ADMIN_SECRET_ENV} on the server to enable it.")
    if not given or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise AdminRefused("Wrong admin secret.")
