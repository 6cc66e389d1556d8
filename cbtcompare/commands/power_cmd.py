"""`power`: pairs or patients needed for a tuned-vs-base difference, and the achieved power of scores at hand.

Planning: --difference, --sd (per arm), --correlation of the paired arms, --tests and --correction for
families x items, --sessions and --slope-sd for patient-level planning. With --scores the achieved power of
that data's primary (patient-level) analysis is printed too. The numbers come from cbtcompare.power;
this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from cbtcompare import power


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("power", help="sample size for a tuned-vs-base difference; achieved power of scores")
    parser.add_argument("--difference", type=float, required=True, help="tuned - base difference to detect (points)")
    parser.add_argument("--sd", type=float, required=True, help="SD of a total within one arm")
    parser.add_argument("--correlation", type=float, default=0.5, help="correlation of paired totals (default 0.5)")
    parser.add_argument("--alpha", type=float, default=0.05, help="two-sided family-wise alpha (default 0.05)")
    parser.add_argument("--power", type=float, default=0.8, help="power wanted (default 0.8)")
    parser.add_argument("--tests", type=int, default=1, help="tests sharing the alpha, e.g. families x items")
    parser.add_argument("--correction", choices=["none", "bonferroni", "holm"], default="holm")
    parser.add_argument("--sessions", type=int, default=1, help="sessions per patient (patient-level planning)")
    parser.add_argument("--slope-sd", type=float, default=0.0, help="between-patient SD of the tuning effect")
    parser.add_argument("--scores", type=Path, help="scores CSV: also print the achieved power of its primary analysis")
    parser.add_argument("--pair", action="append", default=[], metavar="BASE=TUNED", help="therapist pair (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        request = power.PowerPlanRequest(
            difference=args.difference,
            sd=args.sd,
            correlation=args.correlation,
            alpha=args.alpha,
            power=args.power,
            tests=args.tests,
            correction=args.correction,
            sessions=args.sessions,
            slope_sd=args.slope_sd,
        )
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems) from None
    result = power.plan(request)
    output: dict[str, object] = {"plan": result.model_dump()}
    if args.scores is not None:
        from cbtcompare import stats
        from cbtcompare.stats.patient_level import patient_level_comparison

        scores = stats.load_scores_csv(args.scores)
        pairs = stats.parse_pair_args(args.pair) or None
        row = patient_level_comparison(scores, pairs=pairs).set_index("measure").loc[stats.TOTAL]
        achieved = power.achieved_power(
            int(row["n_pairs"]),
            float(row["sd_diff"]),
            args.difference,
            alpha=args.alpha,
            tests=args.tests,
            correction=args.correction,
            target_power=args.power,
        )
        output["achieved"] = achieved.model_dump()
    if args.json:
        print(json.dumps(output, indent=2, allow_nan=True))
        return 0
    print(
        f"difference {request.difference:g} points, SD {request.sd:g}, correlation {request.correlation:g}, "
        f"alpha per test {result.alpha_per_test:.4g} ({request.correction}, {request.tests} test(s)), "
        f"power {request.power:g}"
    )
    print(f"pairs needed (paired, SD of differences {result.sd_of_pair_difference:.3g}): {result.pairs_needed}")
    print(
        f"patients needed ({request.sessions} session(s) each, tuning-effect SD {request.slope_sd:g}): "
        f"{result.patients_needed}"
    )
    print(f"per arm if the arms were independent: {result.per_arm_needed_if_independent}")
    if "achieved" in output:
        a = output["achieved"]
        print(
            f"data at hand: {a['n_units']} patients, SD of patient differences {a['sd_of_differences']:.3g}: "
            f"power {a['power']:.3f} for {a['difference']:g} points; minimal detectable difference "
            f"{a['minimal_detectable_difference']:.3g} at power {a['target_power']:g}"
        )
    return 0
