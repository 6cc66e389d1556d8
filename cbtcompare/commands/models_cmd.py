"""`models`: list the registry's specs and whether each can be loaded here."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from cbtcompare.models.registry import Registry


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list models and whether each is available")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    registry = Registry.from_files()
    rows = [registry.availability(name) for name in registry.names()]
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        for row in rows:
            state = "available" if row.available else f"unavailable: {row.reason}"
            print(f"{row.name:28} {row.backend:9} {state}")
    return 0
