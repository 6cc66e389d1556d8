"""`smoke`: load the embedded default GGUF and generate a few tokens, in a child process.

`make install` ends with it, so a llama.cpp build that uses CPU instructions this machine lacks fails at
install with a message instead of killing the app later with SIGILL. The generation runs in a child so a
signal there is reported here, with what to do about it. It never downloads anything.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

SMOKE_MODEL = "smollm2-instruct"
SMOKE_TIMEOUT_S = 300

_CHILD = f"""
import json, llama_cpp
from cbtcompare.models.base import Message, Sampling
from cbtcompare.models.registry import Registry
registry = Registry.from_files()
model = registry.load({SMOKE_MODEL!r})
text = model.complete([Message("user", "Say hello.")], Sampling(temperature=0.0, max_tokens=8, seed=1))
registry.close()
info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
print(json.dumps({{"text": text, "system_info": info, "llama_cpp": llama_cpp.__version__}}))
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "smoke", help="check that llama.cpp runs on this CPU: load the default model and generate a few tokens"
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(handler=run)


def installed_variant() -> str:
    """The instruction-set variant tools/install_llama_cpp.sh recorded in the venv, or 'unknown'."""
    marker = Path(sys.prefix) / ".llama-variant"
    return marker.read_text(encoding="utf-8").strip() if marker.is_file() else "unknown"


def failure_advice(returncode: int, variant: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        what = f"llama.cpp died with {name}"
        if name == "SIGILL":
            what += " (an instruction this CPU cannot run)"
    else:
        what = f"the smoke generation exited with status {returncode}"
    return (
        f"{what}; llama-cpp-python build variant: {variant}. Rebuild with a narrower instruction set: "
        "remove ~/.cache/cbtcompare/wheels/llama-cpp-python-* and run "
        "`rm -f .venv/.installed-run && CBTCOMPARE_LLAMA_VARIANT=x86-64-v2 make install` "
        "(or CBTCOMPARE_LLAMA_VARIANT=generic)."
    )


def run(args: argparse.Namespace) -> int:
    variant = installed_variant()
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        print(f"error: the smoke generation took more than {SMOKE_TIMEOUT_S} s", file=sys.stderr)
        return 1
    if child.returncode != 0:
        tail = "\n".join(child.stderr.strip().splitlines()[-5:])
        print(f"error: {failure_advice(child.returncode, variant)}\n{tail}", file=sys.stderr)
        return 1
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["variant"] = variant
    if args.json:
        print(json.dumps(result))
    else:
        print(f"llama.cpp smoke check passed ({variant} build): {result['text']!r}")
    return 0
