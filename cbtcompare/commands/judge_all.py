"""`judge --all`, `judge --pairwise` and `judge --padding-bias`: batch judging of stored sessions.

`--all` scores every stored simulated session (or those of `--batch ID` or `--study FILE`) that the
judges have not yet scored with this rubric and prompt version; `--pairwise` judges matched tuned-vs-base
pairs in both orders. Sessions the simulation quality gate flags are left out unless --include-flagged.
`--padding-bias` re-judges up to --limit stored sessions with neutral filler added (never stored) and
prints each judge's length bias with a CI (cbtcompare.ctrs.bias); --bias-out writes the per-judge CSV that
`report --padding-bias` shows. Prints one JSON object with --json. The work is cbtcompare.ctrs.batch and
cbtcompare.ctrs.bias; this module only selects and prints.
"""

from __future__ import annotations

import argparse
import json
import sys

from cbtcompare.ctrs.batch import batch_transcript_ids, judge_stored, pairwise_stored, variant_pairs
from cbtcompare.ctrs.judge import JudgeConfig
from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.models.base import ChatModel
from cbtcompare.models.registry import Registry
from cbtcompare.quality import check_transcript
from cbtcompare.redact import redact_url
from cbtcompare.store import Store


def _selection(args: argparse.Namespace) -> tuple[Store, list[str], list[tuple[str, str]] | None]:
    """The store, the session ids, and (for a study) its own pairs."""
    if args.study:
        from cbtcompare.study import load_study
        from cbtcompare.study.plan import build_registry, output_folder, store_for, study_state

        study = load_study(args.study)
        store = Store(args.store) if args.store else store_for(study, output_folder(study), create=False)
        state = study_state(study, output_folder(study), build_registry(study), store)
        return store, state.transcript_ids, [(a, b) for a, b, _ in state.pairs]
    store = Store(args.store or None)
    if args.batch:
        return store, batch_transcript_ids(store, args.batch), None
    return store, [t.id for t in store.iter_transcripts() if t.kind == "simulation"], None


def run_batch_judging(args: argparse.Namespace, rubric: Rubric, registry: Registry, config: JudgeConfig) -> int:
    store, ids, study_pairs = _selection(args)
    flagged = set()
    if not args.include_flagged:
        flagged = {tid for tid in ids if check_transcript(store.get_transcript(tid)).flagged}
    chosen = [tid for tid in ids if tid not in flagged]
    judges = [registry.load(name) for name in args.judge]

    def progress(finished: int, due: int, line: str) -> None:
        if line:
            print(f"[{finished}/{due}] {line}", file=sys.stderr, flush=True)

    if args.padding_bias:
        return _padding_bias(args, store, chosen, judges, rubric, config)
    if args.pairwise:
        pairs = study_pairs if study_pairs is not None else variant_pairs(store, chosen)
        pairs = [(a, b) for a, b in pairs if a not in flagged and b not in flagged]
        tally = pairwise_stored(store, pairs, judges, rubric, config, repeats=args.repeats, progress=progress)
    else:
        tally = judge_stored(store, chosen, judges, rubric, config, repeats=args.repeats, progress=progress)
    summary = {**tally.as_dict(), "sessions": len(ids), "quarantined": len(flagged), "store": redact_url(store.url)}
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        what = "pairwise judgements" if args.pairwise else "judgements"
        print(
            f"{tally.added} {what} added, {tally.skipped} already stored, {tally.unscored_items} unscored items, "
            f"{len(flagged)} of {len(ids)} sessions quarantined by the quality gate"
        )
        for failure in tally.failed:
            print(f"failed: {failure}")
    return 1 if tally.failed else 0


def _padding_bias(
    args: argparse.Namespace,
    store: Store,
    chosen: list[str],
    judges: list[ChatModel],
    rubric: Rubric,
    config: JudgeConfig,
) -> int:
    from cbtcompare.ctrs.bias import length_bias_by_padding

    if args.limit < 1 or args.padding_exchanges < 1:
        raise ValueError("--limit and --padding-exchanges must be at least 1")
    if not chosen:
        raise ValueError("no stored sessions to pad: run a simulation or a study first (or drop the quality filter)")
    transcripts = [store.get_transcript(tid) for tid in chosen[: args.limit]]
    per_transcript, per_judge = length_bias_by_padding(
        judges, transcripts, rubric, config, exchanges=args.padding_exchanges
    )
    if args.bias_out:
        per_judge.to_csv(args.bias_out, index=False)
    summary = {
        "length_bias_by_padding": per_judge.to_dict(orient="records"),
        "per_transcript": per_transcript.to_dict(orient="records"),
        "exchanges_added": args.padding_exchanges,
        "store": redact_url(store.url),
    }
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, allow_nan=True))
    else:
        for row in summary["length_bias_by_padding"]:
            print(
                f"{row['judge']}: padded - original total {row['mean']:+.2f} points "
                f"(95% CI {row['ci_low']:.2f} to {row['ci_high']:.2f}, n {row['n']}, p {row['p_value']:.3g})"
            )
    return 0
