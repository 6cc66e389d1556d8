"""A study's results: its scores table (with the study's own family/variant mapping), the pairwise win
rates with each judge's order-flip rate, the quality gate's table, and the report written from them. The
tuned-vs-base analyses pair the therapists the study's arms name (base with tuned of one arm), never a
guess from names.

The report is written into a fresh folder that is then swapped in, so a kill while writing never leaves
half a report where the last one was. This module reads the store through cbtcompare.ctrs; it never
writes to the store and never calls a model.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cbtcompare import report
from cbtcompare.ctrs.pairwise import PairwiseResult
from cbtcompare.ctrs.results import FRAME_COLUMNS, load_pairwise, scores_frame
from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.quality import QualityVerdict, flagged_rate
from cbtcompare.store import Store
from cbtcompare.study.spec import StudyFile

PAIRWISE_COLUMNS = [
    "judge",
    "comparison",
    "pairs",
    "items",
    "a_wins",
    "b_wins",
    "ties",
    "inconsistent",
    "unscored",
    "a_win_rate",
    "b_win_rate",
    "order_flip_rate",
]


def study_scores(study: StudyFile, store: Store, transcript_ids: Sequence[str], rubric: Rubric) -> pd.DataFrame:
    """The long scores table of the study's judges on its transcripts, family/variant from the study's arms."""
    if not transcript_ids:
        return pd.DataFrame(columns=FRAME_COLUMNS)
    frame = scores_frame(store, transcript_ids=transcript_ids, judges=study.spec.judging.judges, rubric=rubric.id)
    frame = frame[frame["rubric_version"] == rubric.version]
    arm_of = study.spec.arm_of()
    known = frame["therapist"].isin(list(arm_of))
    frame.loc[known, "family"] = frame.loc[known, "therapist"].map(lambda name: arm_of[name][0])
    frame.loc[known, "variant"] = frame.loc[known, "therapist"].map(lambda name: arm_of[name][1])
    return frame.reset_index(drop=True)


def pairwise_table(results: Sequence[PairwiseResult], labels: dict[tuple[str, str], str]) -> pd.DataFrame:
    """Per judge and comparison: wins of A and B where both orders agreed, ties, order flips (the two
    orders named different transcripts) and unscored items. Win rates are over the decided items (A, B,
    tie); the flip rate is over the items answered in both orders."""
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for result in results:
        label = labels.get((result.transcript_a, result.transcript_b))
        if label is None:
            continue
        row = rows.setdefault(
            (result.judge, label),
            {"judge": result.judge, "comparison": label, "pairs": set(), "items": 0, "a_wins": 0, "b_wins": 0,
             "ties": 0, "inconsistent": 0, "unscored": 0},
        )  # fmt: skip
        row["pairs"].add((result.transcript_a, result.transcript_b))  # type: ignore[union-attr]
        counts = result.counts()
        row["items"] += sum(counts.values())  # type: ignore[operator]
        for outcome, column in (("A", "a_wins"), ("B", "b_wins"), ("tie", "ties"), ("inconsistent", "inconsistent"),
                                ("unscored", "unscored")):  # fmt: skip
            row[column] += counts[outcome]  # type: ignore[operator]
    out = []
    for row in rows.values():
        decided = row["a_wins"] + row["b_wins"] + row["ties"]  # type: ignore[operator]
        answered = decided + row["inconsistent"]  # type: ignore[operator]
        out.append(
            {
                **row,
                "pairs": len(row["pairs"]),  # type: ignore[arg-type]
                "a_win_rate": row["a_wins"] / decided if decided else float("nan"),  # type: ignore[operator]
                "b_win_rate": row["b_wins"] / decided if decided else float("nan"),  # type: ignore[operator]
                "order_flip_rate": row["inconsistent"] / answered if answered else float("nan"),  # type: ignore[operator]
            }
        )
    return pd.DataFrame(out, columns=PAIRWISE_COLUMNS)


def _rate(value: float) -> str:
    return "n/a" if value != value else f"{value:.0%}"  # NaN when nothing was decided


def pairwise_sentences(table: pd.DataFrame) -> list[str]:
    """The pairwise results as report notes, one per judge and comparison (the CSV has the same numbers)."""
    return [
        f"Pairwise win rates ({row.judge}, {row.comparison}, {row.pairs} pairs, {row.items} items, both orders "
        f"asked; a win counts only when both orders agree): A {row.a_wins} ({_rate(row.a_win_rate)}), B "
        f"{row.b_wins} ({_rate(row.b_win_rate)}), ties {row.ties}; order flips {row.inconsistent} "
        f"({_rate(row.order_flip_rate)} of items answered in both orders); unscored {row.unscored}"
        for row in table.itertuples()
    ]


def quality_table(verdicts: Sequence[QualityVerdict]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "transcript_id": v.transcript_id,
                "flagged": v.flagged,
                "checks": ", ".join(v.checks),
                "checked_turns": v.checked_turns,
                "first_problem": f"turn {v.flags[0].turn}: {v.flags[0].detail}" if v.flags else "",
                "rules": v.rules,
            }
            for v in verdicts
        ],
        columns=["transcript_id", "flagged", "checks", "checked_turns", "first_problem", "rules"],
    )


def write_study_report(
    study: StudyFile,
    store: Store,
    rubric: Rubric,
    *,
    judged_ids: Sequence[str],
    pairs: Sequence[tuple[str, str, str]],
    verdicts: Sequence[QualityVerdict],
    folder: Path,
) -> Path:
    """Write <folder>/index.html + CSVs (absolute results, pairwise win rates, the quality gate); return it."""
    scores = study_scores(study, store, judged_ids, rubric)
    notes = [flagged_rate(verdicts).sentence()]
    judges = set(study.spec.judging.judges)
    results = [r for r in load_pairwise(store) if r.judge in judges and r.rubric_id == rubric.id] if pairs else []
    if len(scores):
        present = set(scores["therapist"])
        study_pairs = [(a, b) for a, b in study.spec.base_tuned_pairs() if a in present and b in present]
        bundle = report.build_results(scores, pairs=study_pairs or None, pairwise_results=results)
    else:
        bundle = report.ResultsBundle()
        notes.append("No absolute scores yet" + (" (this study judges pairwise only)" if study.spec.judging.mode
                                                  == "pairwise" else ""))  # fmt: skip
    bundle.notes[:0] = notes
    if pairs:
        labels = {(a, b): label for a, b, label in pairs}
        table = pairwise_table(results, labels)
        bundle.tables["pairwise_win_rates"] = table
        bundle.notes.extend(pairwise_sentences(table))
    bundle.tables["quality_gate"] = quality_table(verdicts)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a report a kill interrupted
    fresh = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    fresh.chmod(0o755)  # mkdtemp makes it owner-only; a report is meant to be opened
    report.write_results(bundle, scores, fresh, title=f"CBTCompare study: {study.spec.name}")
    old = folder.parent / f".{folder.name}-old"
    if folder.exists():
        folder.rename(old)
    fresh.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder / "index.html"
