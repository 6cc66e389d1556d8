"""`report`: write the results report (index.html + one CSV per table) from imported or stored scores.

Without --scores the scores come from the store through the judge's `scores_frame` (cbtcompare.ctrs);
when there are none the command exits 2 and says how to get some. --filter applies before validation, so
`--filter rubric_id=ctrs-paper-1-10` picks one rubric out of a store holding several. `--pair BASE=TUNED`
names the therapist pairs; without it a tuned adapter is paired with the base the registry puts it on
(cbtcompare.study.pairing) and the rest by family (refused when a family has two base or two tuned
therapists, naming them); `--preferences`
adds the arena leaderboard from a votes CSV; `--json` prints report.ReportSummary (the primary and sensitivity
rows at full precision, the power table, every file written) instead of the one-line summary. This module only
parses arguments and prints; the analyses live in cbtcompare.stats and the report in cbtcompare.report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from cbtcompare import arena, report, stats
from cbtcompare.ctrs.pairwise import PairwiseResult

NO_SCORES = (
    "no scores to report: pass --scores FILE.csv (columns: {columns}), or score stored transcripts with "
    "`python -m cbtcompare judge` first"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write the results report (HTML with figures + CSV tables) from CTRS scores"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write index.html and the CSVs into")
    parser.add_argument("--scores", type=Path, help="long-format scores CSV; default: the store's scores")
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep rows where column KEY equals VALUE (repeatable; a repeated key means any of its values)",
    )
    parser.add_argument("--ratings", type=Path, help="human ratings CSV (transcript_id, item, score) to compare")
    parser.add_argument("--loss", type=Path, help="training log: JSON list of {step, loss} or a trainer_state.json")
    parser.add_argument("--title", default="CBTCompare results", help="the report's title")
    parser.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="BASE=TUNED",
        help="a (base therapist, tuned therapist) pair to compare (repeatable); default: the one base and one "
        "tuned therapist of each family, refused when a family has more",
    )
    parser.add_argument(
        "--preferences", type=Path, help="arena votes CSV (model_a, model_b, winner a|b|tie, rater) for the leaderboard"
    )
    parser.add_argument(
        "--padding-bias", type=Path, help="per-judge CSV of `judge --padding-bias --bias-out` (length bias by padding)"
    )
    parser.add_argument(
        "--power-difference",
        type=float,
        default=5.0,
        help="difference in total points whose power the primary analysis is reported for (default 5)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: the primary and sensitivity rows, the power table and the files written",
    )
    parser.set_defaults(handler=run)


def scores_from_store() -> pd.DataFrame | None:
    """The store's scores as the long table (cbtcompare.ctrs.scores_frame), or None when it holds none."""
    from cbtcompare.ctrs import scores_frame
    from cbtcompare.store import Store

    frame = scores_frame(Store())
    return None if frame is None or len(frame) == 0 else frame


def registry_pairing(scores: pd.DataFrame) -> list[tuple[str, str]] | None:
    """Without --pair: each tuned adapter paired with the base the registry puts it on, the other tuned
    therapists by family; None (pair by family alone) when the registry pairs none of them."""
    from cbtcompare.models.registry import Registry
    from cbtcompare.study.pairing import registry_pairs

    known = registry_pairs(Registry.from_files(), sorted(set(scores["therapist"].astype(str).str.strip())))
    if not known:
        return None
    try:
        resolved = stats.resolve_pairing(scores, known, rest_by_family=True)
    except stats.AnalysisError:
        return None  # the report says why when it pairs by family
    return [(p.control, p.treatment) for p in resolved]


def pairwise_from_store() -> list[PairwiseResult]:
    """The store's pairwise results (both orders), for the position-bias table."""
    from cbtcompare.ctrs.results import load_pairwise
    from cbtcompare.store import Store

    return load_pairwise(Store())


def _read_padding_bias(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"padding-bias file not found: {path}")
    frame = pd.read_csv(path)
    needed = ["judge", "n", "mean", "ci_low", "ci_high", "p_value"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; write it with `judge --padding-bias --bias-out FILE`"
        )
    return frame


def _load_loss(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        raise FileNotFoundError(f"loss file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if isinstance(data, dict) and "log_history" in data:
        data = data["log_history"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{step, loss}} records or a trainer_state.json")
    return data


def run(args: argparse.Namespace) -> int:
    filters = report.parse_filter_args(args.filter)
    source, line_offset = None, None
    pairwise_results = None
    if args.scores is not None:
        scores = stats.read_scores_csv(args.scores)
        source, line_offset = str(args.scores), 2
    else:
        scores = scores_from_store()
        if scores is None:
            print("error: " + NO_SCORES.format(columns=", ".join(stats.REQUIRED_COLUMNS)), file=sys.stderr)
            return 2
        pairwise_results = pairwise_from_store()
    ratings = None
    if args.ratings is not None:
        if not args.ratings.is_file():
            raise FileNotFoundError(f"ratings file not found: {args.ratings}")
        ratings = pd.read_csv(args.ratings)
    loss_history = _load_loss(args.loss) if args.loss is not None else None
    pairs = stats.parse_pair_args(args.pair)
    preferences = arena.read_preferences_csv(args.preferences) if args.preferences is not None else None
    filtered = report.apply_filters(scores, filters, source=source, line_offset=line_offset)
    bundle = report.build_results(
        filtered,
        ratings=ratings,
        loss_history=loss_history,
        pairs=pairs or registry_pairing(filtered),
        preferences=preferences,
        power_difference=args.power_difference,
        pairwise_results=pairwise_results,
        padding_bias=_read_padding_bias(args.padding_bias),
    )
    index = report.write_results(bundle, filtered, args.out, filters, title=args.title)
    for note in bundle.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(report.report_summary(bundle, index).model_dump_json())
    else:
        print(f"wrote {index} and {len(bundle.tables)} CSV tables")
    return 0
