"""`arena`: the Bradley-Terry leaderboard of blind preferences, from a votes CSV or a rating study's votes.

`--preferences FILE.csv` (columns model_a, model_b, winner a|b|tie, rater) or `--study ID` (the study's
stored overall preferences, read through cbtcompare.rating). `--json` prints {"ratings": [{model, rating,
ci_low, ci_high, n}...], "raters": [...]}. The fitting lives in cbtcompare.arena; this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from cbtcompare import arena


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("arena", help="Bradley-Terry leaderboard with bootstrap CIs from blind preferences")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preferences", type=Path, help="votes CSV: model_a, model_b, winner (a|b|tie), rater")
    source.add_argument("--study", help="a rating study's id: its stored overall preferences")
    parser.add_argument("--rounds", type=int, default=arena.BOOTSTRAP_ROUNDS, help="bootstrap rounds")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run(args: argparse.Namespace) -> int:
    if args.rounds < 0:
        raise ValueError("--rounds must be 0 or more")
    skipped = 0
    if args.preferences is not None:
        votes = arena.read_preferences_csv(args.preferences)
    else:
        from cbtcompare.store import Store

        votes, skipped = arena.preferences_from_study(Store(), args.study)
    board = arena.bradley_terry(votes, bootstrap_rounds=args.rounds, seed=args.seed)
    raters = arena.rater_flags(votes)
    if skipped:
        print(f"note: {skipped} rating(s) without an overall preference left out", file=sys.stderr)
    if args.json:
        ratings = [
            {**r.model_dump(), "ci_low": _finite(r.ci_low), "ci_high": _finite(r.ci_high)} for r in board.ratings
        ]
        rater_rows = [
            {k: (_finite(v) if isinstance(v, float) else v) for k, v in row.items()}
            for row in raters.to_dict("records")
        ]
        print(json.dumps({"ratings": ratings, "n_votes": board.n_votes, "raters": rater_rows}, ensure_ascii=False))
        return 0
    for r in board.ratings:
        print(f"{r.rating:7.1f}  [{r.ci_low:7.1f}, {r.ci_high:7.1f}]  n={r.n:<5d} {r.model}")
    for row in raters.itertuples():
        if row.flags:
            print(f"rater {row.rater}: {row.flags}", file=sys.stderr)
    return 0
