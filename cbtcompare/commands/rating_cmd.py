"""`rating`: blind human rating studies from the command line (create, export, progress, report, list).

    python -m cbtcompare rating create --pairs FILE_OR_QUERY --raters N [--json]
    python -m cbtcompare rating export --study ID --format csv|jsonl|long [--out FILE]

FILE_OR_QUERY is a pairs JSONL file (one pair per line: [transcript, transcript] or {"a": ..., "b": ...},
each in the store's transcript JSON), or a query over stored matched pairs: `all`, `group:<id>[,<id>...]`
or `kind:<kind>`. The CLI is an admin's tool (it reads the store directly, so no admin secret is asked);
its output names the models. This module only parses arguments and prints; the work is in
cbtcompare.rating.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from cbtcompare import rating
from cbtcompare.rating.export_format import dumps, frame_records, write_frame_csv
from cbtcompare.store import Store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rating", help="blind human rating studies: create, export, progress, report")
    commands = parser.add_subparsers(dest="rating_command", required=True)

    create = commands.add_parser("create", help="create a study; prints its id and one invite code per rater")
    create.add_argument("--pairs", required=True, help=f"a pairs JSONL file, or {rating.QUERY_HELP}")
    create.add_argument("--raters", required=True, type=int, help="how many raters (one invite code each)")
    create.add_argument("--raters-per-pair", type=int, default=None, help="default: every rater rates every pair")
    create.add_argument("--rubric", choices=["paper", "classic", "none"], default="paper")
    create.add_argument("--no-preference", action="store_true", help="do not ask for an overall preference")
    create.add_argument("--no-confidence", action="store_true", help="do not ask for confidence")
    create.add_argument("--no-items", action="store_true", help="do not ask for per-item CTRS scores")
    create.add_argument("--no-comment", action="store_true", help="do not offer a comment box")
    create.add_argument("--seed", type=int, default=0, help="randomisation seed (pair order and sides)")
    create.add_argument("--name", default="", help="a name for the study")
    create.add_argument("--json", action="store_true", help="print JSON: study_id, invite_codes, pairs")
    create.set_defaults(handler=run_create)

    export = commands.add_parser("export", help="write a study's ratings (unblinded: names the models)")
    export.add_argument("--study", required=True)
    export.add_argument(
        "--format",
        choices=["csv", "jsonl", "long"],
        default="csv",
        help="csv / jsonl: one row per rating; long: one row per transcript x item (for `report --ratings`)",
    )
    export.add_argument("--out", type=Path, help="write here instead of stdout")
    export.set_defaults(handler=run_export)

    progress = commands.add_parser("progress", help="ratings done per rater and per pair")
    progress.add_argument("--study", required=True)
    progress.add_argument("--json", action="store_true")
    progress.set_defaults(handler=run_progress)

    report = commands.add_parser("report", help="unblinding report, inter-rater reliability, judge agreement")
    report.add_argument("--study", required=True)
    report.add_argument("--json", action="store_true")
    report.set_defaults(handler=run_report)

    studies = commands.add_parser("list", help="every study with its counts")
    studies.add_argument("--json", action="store_true")
    studies.set_defaults(handler=run_list)


def run_create(args: argparse.Namespace) -> int:
    store = Store()
    spec = rating.StudySpec(
        name=args.name,
        raters=args.raters,
        raters_per_pair=args.raters_per_pair,
        rubric=args.rubric,
        choices=rating.StudyChoices(
            preference=not args.no_preference,
            confidence=not (args.no_confidence or args.no_preference),
            items=not args.no_items,
            comment=not args.no_comment,
        ),
        seed=args.seed,
    )
    resolved = rating.resolve_pairs(store, args.pairs)
    created = rating.create_study(store, resolved.pairs, spec, source=resolved.description, uploaded=resolved.uploaded)
    if args.json:
        print(
            dumps(
                {
                    "study_id": created.study_id,
                    "invite_codes": created.invite_codes,
                    "pairs": created.pairs,
                    "assignments": created.assignments,
                }
            )
        )
    else:
        print(f"study {created.study_id}: {created.pairs} pairs, {created.assignments} assignments")
        for number, code in enumerate(created.invite_codes, start=1):
            print(f"rater {number}: {code}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    store = Store()
    out = args.out.open("w", encoding="utf-8", newline="") if args.out else sys.stdout
    try:
        if args.format == "long":
            count = write_frame_csv(rating.human_scores(store, args.study), out)
        else:
            count = rating.write_export(store, args.study, out, args.format)
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"wrote {count} rows to {args.out}", file=sys.stderr)
    return 0


def run_progress(args: argparse.Namespace) -> int:
    per_rater, per_pair = rating.progress_tables(Store(), args.study)
    if args.json:
        print(dumps({"raters": per_rater.to_dict("records"), "pairs": per_pair.to_dict("records")}))
    else:
        print(per_rater.to_string(index=False))
        print()
        print(per_pair.to_string(index=False))
    return 0


def run_report(args: argparse.Namespace) -> int:
    store = Store()
    unblinded = rating.unblinding_report(store, args.study)
    reliable = rating.reliability(store, args.study)
    agreement = rating.judge_agreement(store, args.study)
    if args.json:
        print(
            dumps(
                {
                    "ratings": unblinded.ratings,
                    "shown_a_rate": _number(unblinded.shown_a_rate),
                    "preference": _records(unblinded.preference),
                    "head_to_head": _records(unblinded.head_to_head),
                    "items": _records(unblinded.items),
                    "reliability": {
                        "items": _records(reliable.items),
                        "icc_total": _number(reliable.icc_total),
                        "icc_units": reliable.icc_units,
                        "icc_raters": reliable.icc_raters,
                        "preference_alpha": _number(reliable.preference_alpha),
                    },
                    "judge_agreement": _records(agreement),
                }
            )
        )
        return 0
    print(f"{unblinded.ratings} ratings; share of decided preferences for side A: {unblinded.shown_a_rate:.3f}")
    for title, frame in (
        ("Preference per model", unblinded.preference),
        ("Head to head", unblinded.head_to_head),
        ("Item means per model", unblinded.items),
        ("Krippendorff's alpha (ordinal) per item", reliable.items),
        ("Agreement with LLM judges", agreement),
    ):
        print(f"\n{title}\n{frame.to_string(index=False) if len(frame) else '(none)'}")
    print(
        f"\nICC(2,1) on totals: {reliable.icc_total:.3f} ({reliable.icc_units} units x {reliable.icc_raters} raters)"
        f"\nPreference alpha (nominal): {reliable.preference_alpha:.3f}"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    studies = rating.list_studies(Store())
    if args.json:
        print(dumps([s.__dict__ for s in studies]))
    else:
        for s in studies:
            print(f"{s.id}  {s.name}  pairs={s.pairs} raters={s.raters} ratings={s.ratings}/{s.assignments}")
    return 0


def _number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _records(frame) -> list[dict]:  # type: ignore[no-untyped-def]
    return frame_records(frame)
