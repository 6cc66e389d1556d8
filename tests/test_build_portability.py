"""The llama.cpp build is portable: no instruction beyond its pinned variant, and a smoke generation runs.

A GGML_NATIVE build on a CPU that advertises AMX used `tileloadd` and every model call died with SIGILL
on the machine that ran it. The scan below reads the installed shared libraries' machine code, so it
fails for any build that could use AVX-512 or AMX, whatever CPU it was built on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cbtcompare.commands.smoke_cmd import failure_advice, installed_variant

# AVX-512 uses zmm registers and k mask registers; AMX uses tile instructions; AVX2 uses ymm registers.
WIDER_THAN = {
    "x86-64-v3": re.compile(r"%zmm\d|\{%k[1-7]\}|\btile(loadd|stored|zero|release|cfg)|\btdpb|\btdpfp16"),
    "x86-64-v2": re.compile(r"%[yz]mm\d|\{%k[1-7]\}|\btile(loadd|stored|zero|release|cfg)|\btdpb"),
}

needs_objdump = pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")


def llama_libraries() -> list[Path]:
    import llama_cpp

    package = Path(llama_cpp.__file__).parent
    libraries = sorted(p for p in package.rglob("*.so*") if p.is_file())
    assert libraries, f"no shared libraries under {package}"
    return libraries


def instructions_wider_than(variant: str, library: Path) -> list[str]:
    pattern = WIDER_THAN[variant]
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True, check=True
    ).stdout
    return [line.strip() for line in listing.splitlines() if pattern.search(line)][:5]


@needs_objdump
def test_the_scan_finds_avx512_and_amx_code(tmp_path: Path) -> None:
    """The scan itself can fail: an object compiled for AVX-512 is caught."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the positive control")
    source = tmp_path / "wide.c"
    source.write_text("void add(float *a, const float *b) { for (int i = 0; i < 1024; i++) a[i] += b[i]; }\n")
    wide = tmp_path / "wide.so"
    subprocess.run(["cc", "-O3", "-mavx512f", "-shared", "-fPIC", str(source), "-o", str(wide)], check=True)
    assert instructions_wider_than("x86-64-v3", wide)
    narrow = tmp_path / "narrow.so"
    subprocess.run(["cc", "-O3", "-mavx2", "-shared", "-fPIC", str(source), "-o", str(narrow)], check=True)
    assert not instructions_wider_than("x86-64-v3", narrow)
    assert instructions_wider_than("x86-64-v2", narrow)


@needs_objdump
def test_installed_llama_cpp_uses_no_instruction_beyond_its_variant() -> None:
    variant = installed_variant()
    if variant not in WIDER_THAN:
        pytest.skip(f"llama-cpp-python was not installed by tools/install_llama_cpp.sh as an x86 variant ({variant})")
    found = {lib.name: hits for lib in llama_libraries() if (hits := instructions_wider_than(variant, lib))}
    assert not found, f"instructions wider than {variant}: {found}"


def test_system_info_reports_no_avx512_or_amx() -> None:
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    enabled = {name.strip() for name, value in re.findall(r"([A-Z0-9_ ]+?)\s*=\s*(\d+)", info) if value != "0"}
    assert not {name for name in enabled if name.startswith(("AVX512", "AMX"))}, info


@pytest.mark.slow
def test_smoke_command_generates_with_the_default_model() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cbtcompare", "smoke", "--json"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["text"].strip()
    assert reply["variant"] == installed_variant()


def test_a_signal_in_the_smoke_child_is_explained() -> None:
    advice = failure_advice(-4, "x86-64-v3")
    assert "SIGILL" in advice and "x86-64-v3" in advice
    assert "CBTCOMPARE_LLAMA_VARIANT=x86-64-v2" in advice
    assert "status 3" in failure_advice(3, "generic")
