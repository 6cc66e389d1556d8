"""Shared fixtures. Fixture modules live beside this file as fixtures_*.py and are plugged in here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as cbtcompare.models.llamacpp sets it; before any import

pytest_plugins = [
    "fixtures_models",
    "fixtures_servers",
    "fixtures_app",
    "fixtures_browser",
    "fixtures_postgres",
]
