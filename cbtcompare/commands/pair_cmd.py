"""`pair`: send one message to several models with the same settings and print their replies."""

from __future__ import annotations

import argparse
import json

from cbtcompare.compare import CompareSession
from cbtcompare.models.registry import Registry
from cbtcompare.provenance import describe


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pair", help="one message to 1-3 models side by side")
    parser.add_argument("--models", required=True, help="comma-separated model names, e.g. A,B")
    parser.add_argument("--message", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument(
        "--system-prompt", default=None, help="session system prompt (default: prompts/therapist_basic)"
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    registry = Registry.from_files()
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    for name in names:
        registry.spec(name)  # unknown names fail before anything loads
    # Overrides only: the session resolves them with the one shared-sampling rule, as the Compare tab does.
    overrides = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    session = CompareSession(registry, names, session_prompt=args.system_prompt, sampling=overrides, seed=args.seed)
    sampling = session.sampling
    for _ in session.send(args.message):
        pass
    replies = []
    for pane in session.panes:
        last = pane.transcript.turns[-1] if pane.transcript.turns else None
        text = last.text if last is not None and last.role == "therapist" else None
        provenance = describe(registry.spec(pane.name))
        replies.append(
            {
                "model": pane.name,
                "variant": provenance.variant,
                "family": provenance.family,
                "text": text,
                "error": pane.error,
                "tokens": last.tokens if text is not None else None,
                "seed": last.seed if text is not None else None,
                "techniques": last.flags.get("techniques", []) if text is not None else [],
                "system_prompt_version": pane.transcript.prompt_versions.get("system"),
            }
        )
    crisis = list(session.crisis.categories) if session.crisis else []
    if args.json:
        print(json.dumps({"replies": replies, "seed": args.seed, "sampling": sampling.model_dump(), "crisis": crisis}))
    else:
        for reply in replies:
            print(
                f"== {reply['model']} ==\n{reply['text'] if reply['error'] is None else 'error: ' + reply['error']}\n"
            )
    return 1 if any(r["error"] for r in replies) else 0
