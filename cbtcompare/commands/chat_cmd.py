"""`chat`: talk to one model in the terminal (a research tool, not therapy)."""

from __future__ import annotations

import argparse
import sys

from cbtcompare.compare import CompareSession
from cbtcompare.models.registry import Registry
from cbtcompare.safety import CRISIS_RESOURCES

BANNER = (
    "CBTCompare chat: a research tool for studying language models, not therapy and not a substitute for a "
    "clinician. In a crisis call or text 988 (US), find a helpline at findahelpline.com, or call your local "
    "emergency number. Type /quit to leave, /clear to start over."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help="interactive chat with one model in the terminal")
    parser.add_argument("--model", default="smollm2-cbt-prompted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--system-prompt", default=None)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    registry = Registry.from_files()
    session = CompareSession(
        registry,
        [args.model],
        session_prompt=args.system_prompt,
        seed=args.seed,
    )
    if session.panes[0].error:
        print(f"error: {session.panes[0].error}", file=sys.stderr)
        return 2
    print(BANNER)
    while True:
        try:
            line = input("\nyou> ")
        except EOFError:
            return 0
        if line.strip() in {"/quit", "/exit"}:
            return 0
        if line.strip() == "/clear":
            session.clear()
            continue
        try:
            printed = 0
            print(f"{args.model}> ", end="", flush=True)
            for panes in session.send(line):
                text = panes[0].partial
                print(text[printed:], end="", flush=True)
                printed = len(text)
            print(session.panes[0].partial[printed:])
        except ValueError as exc:
            print(f"error: {exc}")
            continue
        if session.panes[0].error:
            print(f"error: {session.panes[0].error}")
        if session.crisis:
            print("\n" + CRISIS_RESOURCES)
