"""Where things live on disk: the data folder (the store, runs, uploads) and the repository folders.

Data goes under CBTCOMPARE_DATA_DIR when set, else /data when it exists (a Hugging Face Space's
persistent storage), else ./data beside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = Path(__file__).resolve().parent
ADAPTERS_DIR = REPO_ROOT / "adapters"
ASSETS_DIR = REPO_ROOT / "assets"
SPACES_DATA = Path("/data")


def data_dir() -> Path:
    configured = os.environ.get("CBTCOMPARE_DATA_DIR")
    if configured:
        folder = Path(configured)
    elif SPACES_DATA.is_dir() and os.access(SPACES_DATA, os.W_OK):
        folder = SPACES_DATA / "cbtcompare"
    else:
        folder = REPO_ROOT / "data"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
