"""The one content-hash helper: a short, stable digest of text or bytes, and `name@digest` versions.

Every versioned artifact (prompts, rubrics, rule sets, classifiers, profile lists) stores
`content_version(name, content)` beside its results, so any edit to the content gives a new version.
"""

from __future__ import annotations

import hashlib

VERSION_DIGEST_CHARS = 12


def content_digest(content: str | bytes, length: int | None = VERSION_DIGEST_CHARS) -> str:
    """Hex sha256 of `content` (str is UTF-8 encoded), cut to `length` characters (None: all 64)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    digest = hashlib.sha256(data).hexdigest()
    return digest if length is None else digest[:length]


def content_version(name: str, content: str | bytes) -> str:
    """`name@<12 hex digits>`: the version string stored with every result made from `content`."""
    return f"{name}@{content_digest(content)}"
