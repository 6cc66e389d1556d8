"""`python -m cbtcompare ...`: one subcommand per headless job.

Each command lives in its own module under cbtcompare/commands/ exposing `register(subparsers)`;
adding a command is one new module plus one line in COMMAND_MODULES.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from cbtcompare.models.base import ModelError
from cbtcompare.redact import install_log_redaction, install_stream_redaction, redact

COMMAND_MODULES = [
    "cbtcompare.commands.models_cmd",
    "cbtcompare.commands.pair_cmd",
    "cbtcompare.commands.chat_cmd",
    "cbtcompare.commands.report_cmd",
    "cbtcompare.commands.judge_cmd",
    "cbtcompare.commands.crisis_cmd",
    "cbtcompare.commands.simulate_cmd",
    "cbtcompare.commands.train_cmd",
    "cbtcompare.commands.rating_cmd",
    "cbtcompare.commands.power_cmd",
    "cbtcompare.commands.arena_cmd",
    "cbtcompare.commands.import_cmd",
    "cbtcompare.commands.export_cmd",
    "cbtcompare.commands.smoke_cmd",
    "cbtcompare.commands.study_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cbtcompare",
        description="CBTCompare: compare base and CBT-tuned language models. A research tool, not therapy.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    install_log_redaction()
    install_stream_redaction(("stderr",))  # stdout carries data (exports, JSON) and is never rewritten
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ModelError, ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {redact(message)}", file=sys.stderr)
        return 2
    except Exception:  # unexpected: keep the traceback for a bug report, with every secret in it masked
        print(redact(traceback.format_exc()), file=sys.stderr)
        return 1
