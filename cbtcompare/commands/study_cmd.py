"""`study run|status|plan FILE`: reproduce a study from one YAML file (see studies/ and cbtcompare.study).

`study run FILE [--out DIR] [--json]` runs what is missing (sessions, quality gate, judgements, pairwise
judgements, report) and resumes after any kill; `--json` prints one summary object with at least
"sessions", "judged" and "report". `study status` says what is done and due; `study plan` adds which
models are missing here and an estimate of the time left. Neither loads nor downloads a model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cbtcompare.study import load_study
from cbtcompare.study.plan import build_registry, output_folder, plan_lines, plan_study, store_for, study_state
from cbtcompare.study.run import run_study


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("study", help="run, resume, inspect or plan a whole study from a YAML file")
    actions = parser.add_subparsers(dest="study_action", required=True)
    for name, handler, text in (
        ("run", run, "run (or resume) the study and write its report"),
        ("status", status, "what is done and what is due"),
        ("plan", plan, "what would run, which models are missing, and how long it should take"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("file", type=Path, help="a study file, e.g. studies/smoke.yaml")
        action.add_argument("--out", type=Path, default=None, help="output folder (default: the file's out)")
        action.add_argument("--json", action="store_true", help="print one JSON object")
        action.set_defaults(handler=handler)


def run(args: argparse.Namespace) -> int:
    summary = run_study(load_study(args.file), out=args.out)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(f"study {summary['study']}: {summary['message']}")
        print(
            f"sessions {summary['sessions']}/{summary['sessions_planned']} ({summary['sessions_added']} new, "
            f"{summary['quarantined']} quarantined by the quality gate, flagged rate {summary['flagged_rate']:.0%}); "
            f"judged transcripts {summary['judged']}; unscored items {summary['unscored_items']}"
        )
        for role, usage in summary["tokens"].items():  # type: ignore[union-attr]
            print(f"  {role}: {usage['completion_tokens']:.0f} tokens out, {usage['seconds']:.1f} s")
        for row in summary["cost"]:  # type: ignore[union-attr]
            amount = "unknown" if row["cost"] is None else f"{row['cost']:.4f} {row['currency']}"
            bound = " at least" if row["lower_bound"] and row["cost"] is not None else ""
            note = f" ({row['note']})" if row["note"] else ""
            print(f"  endpoint cost, {row['role']} {row['model']}:{bound} {amount}{note}")
        for error in summary["errors"]:  # type: ignore[union-attr]
            print(f"failed: {error}")
        print(f"report: {summary['report']}  (manifest: {summary['manifest']})")
    return 1 if summary["errors"] else 0


def _state(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    study = load_study(args.file)
    out = output_folder(study, args.out)
    registry = build_registry(study)
    store = store_for(study, out, create=False)
    return study, registry, store, study_state(study, out, registry, store)


def status(args: argparse.Namespace) -> int:
    _, _, _, state = _state(args)
    data = state.as_dict()
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    print(f"study batch {data['batch_id']} in {data['out']}")
    for stage in ("sessions", "absolute", "pairwise"):
        counts = data[stage]
        print(f"  {stage:9} {counts['done']}/{counts['total']} done, {counts['due']} due")  # type: ignore[index]
    print(f"  quarantined {data['quarantined']}; report: {data['report'] or 'not written yet'}")
    return 0


def plan(args: argparse.Namespace) -> int:
    data = plan_study(load_study(args.file), args.out)
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        print("\n".join(plan_lines(data)))
    return 0
