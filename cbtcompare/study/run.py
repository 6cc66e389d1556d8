"""Run (or resume) a whole study: simulate -> quality gate -> judge -> judge pairwise -> report.

Every unit is stored in its own transaction the moment it is finished (a session with its batch run key,
a judge result with its rows), and every unit already stored is skipped, so a study killed at any point
resumes where it stopped, with no duplicate and nothing lost; a run with nothing due adds nothing and
says so. Files (manifest, quality verdicts, report) are replaced atomically. Progress goes to stderr as
one tqdm bar per stage. This module never imports gradio.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from cbtcompare.ctrs.batch import BatchJudging, judge_stored, pairwise_stored
from cbtcompare.ctrs.results import load_results
from cbtcompare.models.registry import Registry
from cbtcompare.quality import flagged_rate
from cbtcompare.simulate import BatchProgress, RunResult, run_batch
from cbtcompare.store import Store
from cbtcompare.study.manifest import MANIFEST_FILE, build_manifest, write_json_atomically
from cbtcompare.study.plan import (
    USAGE_FILE,
    batch_config,
    build_registry,
    output_folder,
    require_ready,
    rubric_of,
    store_for,
    study_costs,
    study_state,
)
from cbtcompare.study.results import write_study_report
from cbtcompare.study.spec import StudyFile

QUALITY_FILE = "quality.json"
LOCK_FILE = ".study.lock"


def _bar(stage: str, total: int, initial: int, stream: TextIO | None):  # type: ignore[no-untyped-def]
    """A tqdm bar with an ETA on `stream` (default stderr)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=stage, unit="unit", file=stream or sys.stderr, mininterval=0.5)


def _append_usage(out: Path, rows: list[dict[str, object]]) -> None:
    """One JSON line per role and model per stage; a line cut by a kill is skipped by the reader."""
    if not rows:
        return
    with (out / USAGE_FILE).open("a", encoding="utf-8") as ledger:
        for row in rows:
            ledger.write(json.dumps(row, sort_keys=True) + "\n")


def _add(
    tally: dict[str, dict[str, float]],
    role: str,
    completion: float,
    prompt: float,
    seconds: float,
    calls_without_prompt_tokens: int = 0,
) -> None:
    """`calls_without_prompt_tokens`: calls whose backend reported no prompt tokens (so `prompt_tokens` is a
    lower bound whenever it is above zero)."""
    entry = tally.setdefault(
        role, {"completion_tokens": 0, "prompt_tokens": 0, "seconds": 0.0, "calls_without_prompt_tokens": 0}
    )
    entry["completion_tokens"] += completion
    entry["prompt_tokens"] += prompt
    entry["seconds"] = round(entry["seconds"] + seconds, 3)
    entry["calls_without_prompt_tokens"] += calls_without_prompt_tokens


def session_usage(
    runs: Iterable[RunResult], patient: str
) -> tuple[dict[str, dict[str, float]], list[dict[str, object]]]:
    """Per-role totals (the `tokens` of `study run --json`) and one usage-ledger row per finished session and
    role, each as its backends reported it, calls without prompt tokens counted apart."""
    tokens: dict[str, dict[str, float]] = {}
    rows: list[dict[str, object]] = []
    for run in runs:
        if run.status != "done":
            continue
        for role, name in (("therapist", run.spec.therapist), ("patient", patient)):
            used = run.usage[role]
            _add(
                tokens, role, used.completion_tokens, used.prompt_tokens, used.seconds, used.calls_without_prompt_tokens
            )
            rows.append({"stage": "sessions", "role": role, "model": name, **used.as_dict()})
    return tokens, rows


class StudyBusy(ValueError):
    """Another process is running this study (into the same output folder) right now."""


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One `study run` per output folder at a time; the OS drops the lock when the holder dies (kill -9)."""
    import fcntl

    with (folder / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyBusy(f"another `study run` is writing into {folder} right now; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_study(
    study: StudyFile,
    *,
    out: Path | str | None = None,
    registry: Registry | None = None,
    store: Store | None = None,
    progress_stream: TextIO | None = None,
    stop_event: threading.Event | None = None,
) -> dict[str, object]:
    """Run what is due and write the report; returns the summary (see the `study run --json` shape)."""
    folder = output_folder(study, out)
    registry = registry or build_registry(study)
    require_ready(study, registry)
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder):
        return _run(study, folder, registry, store, progress_stream, stop_event)


def _run(
    study: StudyFile,
    folder: Path,
    registry: Registry,
    store: Store | None,
    progress_stream: TextIO | None,
    stop_event: threading.Event | None,
) -> dict[str, object]:
    started = time.perf_counter()
    spec = study.spec
    store = store or store_for(study, folder)
    rubric = rubric_of(study)
    config = batch_config(study, registry)
    models = {name: registry.load(name) for name in spec.model_names()}
    manifest_path = folder / MANIFEST_FILE
    manifest = build_manifest(study, batch_id=config.batch_id, rubric=rubric, models=models, store_url=store.url)
    before = study_state(study, folder, registry, store)
    nothing_due = before.sessions.due == 0 and before.absolute.due == 0 and before.pairwise.due == 0

    if not (nothing_due and manifest_path.is_file()):
        write_json_atomically(manifest_path, manifest)

    # 1. Sessions ------------------------------------------------------------------------------------
    bar = _bar("sessions", before.sessions.total, before.sessions.done, progress_stream)

    def session_done(update: BatchProgress) -> None:
        if update.last.status != "skipped":
            bar.update(1)  # type: ignore[attr-defined]

    try:
        batch = run_batch(config, registry, store, progress=session_done, stop_event=stop_event)
    finally:
        bar.close()  # type: ignore[attr-defined]
    tokens, usage_rows = session_usage(batch.runs, spec.patient.model)
    _append_usage(folder, usage_rows)
    if stop_event is not None and stop_event.is_set():
        return {"stopped": True, "out": str(folder)}

    # 2. Quality gate --------------------------------------------------------------------------------
    state = study_state(study, folder, registry, store)
    verdicts = list(state.verdicts.values())
    rate = flagged_rate(verdicts)
    write_json_atomically(
        folder / QUALITY_FILE,
        {"rate": rate.model_dump(), "verdicts": {v.transcript_id: v.model_dump() for v in verdicts}},
    )

    # 3. Judging ---------------------------------------------------------------------------------------
    judges = [models[name] for name in spec.judging.judges]
    judging = spec.judging

    def judged_bar(stage: str) -> Callable[[int, int, str], None]:
        holder: dict[str, object] = {}

        def progress(finished: int, due: int, line: str) -> None:
            if "bar" not in holder:
                holder["bar"] = _bar(stage, due, 0, progress_stream)
            elif line:
                holder["bar"].update(1)  # type: ignore[attr-defined]

        progress.close = lambda: holder["bar"].close() if "bar" in holder else None  # type: ignore[attr-defined]
        return progress

    absolute = BatchJudging()
    if judging.absolute:
        progress = judged_bar("judge")
        try:
            absolute = judge_stored(
                store, state.judgeable, judges, rubric, judging.config, repeats=judging.repeats,
                concurrency=spec.concurrency, progress=progress, stop_event=stop_event,
            )  # fmt: skip
        finally:
            progress.close()  # type: ignore[attr-defined]
    pairwise = BatchJudging()
    if judging.pairwise:
        progress = judged_bar("pairwise")
        try:
            pairwise = pairwise_stored(
                store, [(a, b) for a, b, _ in state.pairs], judges, rubric, judging.config, repeats=judging.repeats,
                concurrency=spec.concurrency, progress=progress, stop_event=stop_event,
            )  # fmt: skip
        finally:
            progress.close()  # type: ignore[attr-defined]
    for stage, tally in (("judge", absolute), ("pairwise", pairwise)):
        if tally.usage.judgements:
            # Judge prompt tokens are not logged: every judgement (one call or more) counts as a call without them.
            _add(tokens, "judge", tally.usage.completion_tokens, 0, tally.usage.seconds, tally.usage.judgements)
            # Judges' time is pooled over judges; the ledger keeps it per stage for `study plan`.
            for name in judging.judges:
                usage_rows = [{"stage": stage, "role": "judge", "model": name,
                               "completion_tokens": tally.usage.completion_tokens / len(judges),
                               "seconds": tally.usage.seconds / len(judges)}]  # fmt: skip
                _append_usage(folder, usage_rows)
    if stop_event is not None and stop_event.is_set():
        return {"stopped": True, "out": str(folder)}

    # 4. Report -----------------------------------------------------------------------------------------
    added = batch.count("done") + absolute.added + pairwise.added
    index = state.report
    report_written = bool(added or not index.is_file())
    if report_written:
        index = write_study_report(
            study, store, rubric, judged_ids=state.judgeable, pairs=state.pairs, verdicts=verdicts,
            folder=folder / "report",
        )  # fmt: skip
    after = study_state(study, folder, registry, store)
    stored = load_results(store, transcript_ids=after.judgeable or [""], rubric_id=rubric.id)
    stored = [r for r in stored if r.judge in set(judging.judges) and r.rubric_version == rubric.version]
    summary: dict[str, object] = {
        "study": spec.name,
        "batch_id": config.batch_id,
        "out": str(folder),
        "sessions": after.sessions.done,
        "sessions_planned": after.sessions.total,
        "sessions_added": batch.count("done"),
        "sessions_failed": batch.count("failed"),
        "quarantined": rate.flagged,
        "flagged_rate": round(rate.rate, 4),
        "judged": len({r.transcript_id for r in stored}),
        "judgements_added": absolute.added,
        "pairwise_added": pairwise.added,
        "pairwise_inconsistent_items": pairwise.inconsistent_items,
        "unscored_items": sum(r.unscored_items for r in stored),
        "tokens": tokens,
        "cost": study_costs(study, folder, registry),
        "seconds": round(time.perf_counter() - started, 2),
        "report": str(index),
        "manifest": str(manifest_path),
        "added_nothing": added == 0 and not report_written,
        "report_written": report_written,
        "errors": [*batch.summary()["errors"], *absolute.failed, *pairwise.failed],
    }
    if added:
        summary["message"] = (
            f"added {batch.count('done')} session(s), {absolute.added} score result(s), "
            f"{pairwise.added} pairwise result(s)"
        )
    elif report_written:
        summary["message"] = "every session and judgement was already there; the missing report was written"
    else:
        summary["message"] = "nothing to do: every session, judgement and the report were already there"
    return summary
