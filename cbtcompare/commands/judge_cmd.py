"""`judge`: score a transcript on a CTRS rubric with one or more registry models as judges.

`python -m cbtcompare judge --rubric paper|classic|FILE --judge NAME --transcript FILE [--repeats R] --json`
prints one JSON object: {"items": {ITEM: {"score", "status", "justification", "evidence"}}, "total",
"scored_items", "partial", "turns": [{"role", "text"}, ...], ...}: the turns as parsed, numbered from 0 as
the evidence cites them. With several judges or repeats, items carry the median over the runs and its
spread. `--store` saves the transcript (when read from a file, once the judges have loaded) and every
score row. Exit status: 0 when at least one item was scored (or n/a), 1 when the judges ran but scored
nothing (every item unscored; the reasons are on stderr), 2 for bad input.
`judge --all` and `judge --pairwise` (optionally `--batch ID` or `--study FILE`) judge stored sessions in
bulk, skipping what is already judged the same way; `judge --padding-bias` measures each judge's length bias
by re-judging padded copies (cbtcompare/commands/judge_all.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from cbtcompare.ctrs import JudgeConfig, JudgeResult, aggregate_results, load_rubric, save_results, score_many
from cbtcompare.importers import import_file, save_imported
from cbtcompare.models.registry import Registry
from cbtcompare.redact import redact_url
from cbtcompare.store import Store
from cbtcompare.transcript import Transcript


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("judge", help="score a transcript on the CTRS with model judges")
    parser.add_argument("--rubric", required=True, help="paper, classic, or a rubric file (see cbtcompare/rubrics/)")
    parser.add_argument("--judge", required=True, action="append", help="registry model name; repeat for K judges")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--transcript", help="a transcript file: plain text (Patient:/Therapist:), JSON or JSONL")
    source.add_argument("--transcript-id", help="a transcript already in the store (re-scoring)")
    source.add_argument(
        "--all",
        action="store_true",
        help="every stored simulated session not yet scored by "
        "these judges with this rubric and prompt version (narrow with --batch or --study)",
    )
    source.add_argument(
        "--pairwise",
        action="store_true",
        help="matched tuned-vs-base pairs of stored sessions, judged in both orders (narrow with --batch or --study)",
    )
    source.add_argument(
        "--padding-bias",
        action="store_true",
        help="length bias by manipulation: re-judge "
        "stored sessions with neutral filler added (never stored); narrow with --batch or --study",
    )
    parser.add_argument("--limit", type=int, default=20, help="with --padding-bias: most sessions re-judged (20)")
    parser.add_argument("--padding-exchanges", type=int, default=3, help="with --padding-bias: filler exchanges (3)")
    parser.add_argument("--bias-out", help="with --padding-bias: write the per-judge table to this CSV")
    parser.add_argument("--batch", help="with --all/--pairwise: the sessions of one batch (NAME@FINGERPRINT)")
    parser.add_argument("--study", help="with --all/--pairwise: a study file (its store, sessions and pairs)")
    parser.add_argument(
        "--include-flagged",
        action="store_true",
        help="with --all/--pairwise: also judge sessions the simulation quality gate flags",
    )
    parser.add_argument("--index", type=int, default=None, help="which transcript of a file holding several (0-based)")
    parser.add_argument("--repeats", type=int, default=1, help="samples per judge (default 1)")
    parser.add_argument("--mode", choices=["all", "per-item"], default="all", help="all items per call, or per item")
    parser.add_argument("--retries", type=int, default=2, help="re-asks after an answer fails validation (default 2)")
    parser.add_argument("--temperature", type=float, default=None, help="default 0.1 (the paper's judge)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=None, help="reply budget per call")
    parser.add_argument("--max-evidence", type=int, default=None, help="most evidence quotes per item (default 3)")
    parser.add_argument("--justification-chars", type=int, default=None, help="longest justification (default 300)")
    parser.add_argument("--detail", choices=["auto", "anchors", "brief"], default="auto", help="rubric text shown")
    parser.add_argument(
        "--store", nargs="?", const="", default=None, help="save the scores (optionally to this database URL)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    rubric = load_rubric(args.rubric)
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    registry = Registry.from_files()
    for name in args.judge:
        registry.spec(name)  # unknown names fail before anything loads
    store = Store(args.store or None) if args.store is not None else None
    overrides = {
        "mode": args.mode,
        "retries": args.retries,
        "seed": args.seed,
        "detail": args.detail,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "max_evidence": args.max_evidence,
        "justification_chars": args.justification_chars,
    }
    config = JudgeConfig(**{k: v for k, v in overrides.items() if v is not None})
    if args.all or args.pairwise or args.padding_bias:
        from cbtcompare.commands.judge_all import run_batch_judging

        return run_batch_judging(args, rubric, registry, config)
    transcript, from_file = _transcript(args, store)
    judges = [registry.load(name) for name in args.judge]
    if store is not None and from_file:  # only now that everything it needs has loaded
        (stored_id,) = save_imported(store, [transcript])
        transcript = store.get_transcript(stored_id)
    # Judging a stored transcript again continues its repeats (and their seeds) instead of repeating repeat 0.
    first_repeat = None if store is None else (lambda t, j: store.next_repeat(t.id, j.name, rubric.id))
    results = score_many([transcript], judges, rubric, config, repeats=args.repeats, first_repeat=first_repeat)
    if store is not None:
        save_results(store, results)
    summary = results[0].summary_dict() if len(results) == 1 else aggregate_results(results).summary_dict()
    if store is not None:
        summary["stored"] = {"url": redact_url(store.url), "result_ids": [r.id for r in results]}
    summary["turns"] = [{"role": turn.role, "text": turn.text} for turn in transcript.turns]
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        _print_table(summary)
    if not any(r.scored_items or r.na_items for r in results):
        print(f"error: no item was scored: {_unscored_reasons(results)}", file=sys.stderr)
        return 1
    return 0


def _unscored_reasons(results: list[JudgeResult], limit: int = 3) -> str:
    reasons = list(dict.fromkeys(i.reason or "no valid answer" for r in results for i in r.items.values()))
    more = f" (and {len(reasons) - limit} other reasons)" if len(reasons) > limit else ""
    return "; ".join(reasons[:limit]) + more


def _transcript(args: argparse.Namespace, store: Store | None) -> tuple[Transcript, bool]:
    """The transcript to judge, and whether it came from a file (and so is not in the store yet)."""
    if args.transcript_id:
        return (store or Store()).get_transcript(args.transcript_id), False
    transcripts = import_file(args.transcript)
    if args.index is not None:
        if not 0 <= args.index < len(transcripts):
            raise ValueError(f"--index {args.index} is out of range: {args.transcript} holds {len(transcripts)}")
        transcripts = [transcripts[args.index]]
    elif len(transcripts) > 1:
        raise ValueError(f"{args.transcript} holds {len(transcripts)} transcripts; choose one with --index N")
    return transcripts[0], True


def _print_table(summary: dict) -> None:
    items = summary["items"]
    width = max(len(name) for name in items)
    for name, item in items.items():
        score = "-" if item["score"] is None else str(item["score"])
        note = item.get("reason") or item.get("justification") or ""
        print(f"{name:<{width}}  {item['status']:<8}  {score:>3}  {note[:90]}")
    partial = " (partial: some items unscored)" if summary["partial"] else ""
    print(f"total {summary['total']} over {summary['scored_items']} scored items{partial}")
