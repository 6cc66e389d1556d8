"""`simulate` and `simulate-batch`: simulated-patient sessions from the command line.

`simulate` runs one matched group (1-3 therapists, one patient, one seed schedule), or a course with
--sessions, prints one JSON object per finished session with --json, and stores every transcript.
`simulate-batch` runs (or resumes) a batch described by a YAML file, with a progress bar and a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cbtcompare.models.registry import Registry
from cbtcompare.patients import load_profile
from cbtcompare.simulate import BatchConfig, BatchProgress, GroupHooks, SessionSettings, run_batch, run_course
from cbtcompare.store import Store
from cbtcompare.transcript import Transcript


def register(subparsers: argparse._SubParsersAction) -> None:
    single = subparsers.add_parser("simulate", help="simulated-patient sessions for 1-3 therapist models")
    single.add_argument("--profile", required=True, help="a profile id, a YAML/JSON profile file, or sampled-<seed>")
    single.add_argument("--therapists", required=True, help="comma-separated therapist model names, e.g. A,B")
    single.add_argument("--patient", required=True, help="the model that plays the patient")
    single.add_argument("--turns", type=int, default=6, help="therapist turns per session")
    single.add_argument("--seed", type=int, default=0)
    single.add_argument("--sessions", type=int, default=1, help="sessions in the course (carry-over from session 2)")
    single.add_argument("--max-tokens", type=int, default=None, help="reply budget for therapist and patient turns")
    single.add_argument("--temperature", type=float, default=None)
    single.add_argument("--summary-max-tokens", type=int, default=160, help="budget of the carry-over summary")
    single.add_argument("--db", default=None, help="store URL (default: the app's store)")
    single.add_argument("--no-store", action="store_true", help="do not store the transcripts")
    single.add_argument("--json", action="store_true", help="one JSON object per finished session")
    single.set_defaults(handler=run_simulate)

    batch = subparsers.add_parser("simulate-batch", help="run or resume a batch of simulated sessions (YAML config)")
    batch.add_argument("--config", required=True, type=Path)
    batch.add_argument("--db", default=None, help="store URL (overrides the config's db)")
    batch.add_argument("--json", action="store_true", help="print the summary as JSON")
    batch.set_defaults(handler=run_simulate_batch)


def session_json(transcript: Transcript) -> dict[str, object]:
    return {
        "profile": transcript.meta["profile_id"],
        "therapist": transcript.therapist_name,
        "variant": transcript.meta["variant"],
        "family": transcript.meta["family"],
        "seed": transcript.seed,
        "turns": [{"role": t.role, "text": t.text} for t in transcript.turns],
        "session_id": transcript.id,
        "group_id": transcript.group_id,
        "session_index": transcript.meta["session_index"],
        "course_id": transcript.meta.get("course_id"),
        "stop_reason": transcript.meta["stop_reason"],
        "patient": transcript.meta["patient_model"],
        "fidelity_ok": transcript.meta["fidelity"]["ok"],
    }


def run_simulate(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.therapists.split(",") if name.strip()]
    if not names:
        raise ValueError("--therapists names no model; give e.g. --therapists smollm2-instruct,smollm2-cbt")
    profile = load_profile(args.profile)
    registry = Registry.from_files()
    for name in [*names, args.patient]:
        registry.spec(name)  # unknown names fail before anything loads
    therapists = [registry.load(name) for name in names]
    patient = registry.load(args.patient)
    overrides = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    store = None if args.no_store else Store(args.db)

    def finished(transcript: Transcript) -> None:
        if store is not None:
            store.save_transcript(transcript)
        if args.json:
            print(json.dumps(session_json(transcript), ensure_ascii=False), flush=True)
        else:
            meta = transcript.meta
            print(f"== {transcript.therapist_name} · {profile.id} · session {meta['session_index']} "
                  f"· stop: {meta['stop_reason']} · id {transcript.id}")
            for turn in transcript.turns:
                print(f"{turn.role}: {turn.text}")
            print(flush=True)

    # One therapist sampling for the whole group (the first therapist's spec plus the overrides; the rule
    # lives in SessionSettings), so differences come from the models, not their settings.
    settings = SessionSettings(
        max_turns=args.turns,
        seed=args.seed,
        therapist_sampling=overrides,
        patient_sampling=overrides,
        summary_max_tokens=args.summary_max_tokens,
    )
    run_course(therapists, patient, profile, settings, args.sessions, GroupHooks(on_transcript=finished))
    return 0


def run_simulate_batch(args: argparse.Namespace) -> int:
    config = BatchConfig.from_file(args.config)
    registry = Registry.from_files(Path(config.models) if config.models else None)
    store = Store(args.db or config.db)
    from tqdm import tqdm

    bar = tqdm(total=None, desc=config.name, unit="session", file=sys.stderr)

    def progress(update: BatchProgress) -> None:
        bar.total = update.total
        bar.update(1)
        last = update.last
        spec = last.spec
        detail = last.stop_reason or last.error or ""
        bar.write(
            f"{last.status:7} {spec.profile_id} · {spec.therapist} · r{spec.replicate} s{spec.session_index}"
            f"{' · ' + detail if detail else ''}{f' · {last.seconds:.1f}s' if last.status == 'done' else ''}",
            file=sys.stdout,
        )
        sys.stdout.flush()

    try:
        result = run_batch(config, registry, store, progress=progress)
    finally:
        bar.close()
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"batch {summary['batch_id']}: {summary['done']} run, {summary['skipped']} already done, "
            f"{summary['failed']} failed, {summary['ended']} ended early, of {summary['total']} sessions "
            f"in {summary['seconds']} s ({summary['sessions_per_minute']} sessions/min, concurrency "
            f"{summary['concurrency']}); tokens: therapist {summary['therapist_tokens']}, patient "
            f"{summary['patient_tokens']}; stop reasons: {summary['stop_reasons']}"
        )
        for error in summary["errors"]:
            print(f"failed: {error}")
    return 1 if summary["failed"] else 0
