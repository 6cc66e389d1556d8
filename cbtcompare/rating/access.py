"""The study admin area's gate: the shared admin secret of cbtcompare.access, re-exported here so that
`cbtcompare.rating.require_admin` keeps working. This module never imports gradio."""

from __future__ import annotations

from cbtcompare.access import (
    ADMIN_SECRET_ENV,
    MIN_SECRET_LENGTH,
    AdminLockedOut,
    AdminRefused,
    admin_enabled,
    admin_panel_allowed,
    require_admin,
)

__all__ = [
    "ADMIN_SECRET_ENV",
    "MIN_SECRET_LENGTH",
    "AdminLockedOut",
    "AdminRefused",
    "admin_enabled",
    "admin_panel_allowed",
    "require_admin",
]
