"""Does the shipped CBT adapter change behaviour? Matched simulated sessions, instruct vs CBT-tuned therapist.

Each pair runs the same profile, patient model (smollm2-instruct), patient opening and seed schedule with
smollm2-instruct and with smollm2-cbt as the therapist (cbtcompare.simulate.run_pair). A session's score
is the share of its therapist turns carrying at least one of the tagger's CBT moves (agenda, Socratic
question, homework, summary, feedback request: cbtcompare.techniques.cbt_move_rate). Paired tests over
sessions: Wilcoxon signed-rank and paired t. `--prompted` adds smollm2-cbt-prompted (the same system
prompt without the adapter) on the same pairs, to tell the adapter's share from the prompt's.
`--write-card` writes the figures into adapters/smollm2-135m-cbt/README.md between its markers.
Last line: ratio=<mean tuned rate / mean instruct rate>. Target > 1.5 with p < 0.05.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)

CARD = _common.REPO / "adapters" / "smollm2-135m-cbt" / "README.md"
START, END = "<!-- adapter_effect:start -->", "<!-- adapter_effect:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per profile")
    parser.add_argument("--max-turns", type=int, default=3, help="therapist turns per session")
    parser.add_argument("--therapist-max-tokens", type=int, default=120, help="the same cap for every therapist")
    parser.add_argument("--patient-max-tokens", type=int, default=80)
    parser.add_argument("--instruct", default="smollm2-instruct")
    parser.add_argument("--tuned", default="smollm2-cbt")
    parser.add_argument("--prompted", action="store_true", help="also run smollm2-cbt-prompted on the same pairs")
    parser.add_argument("--out", type=Path, help="write every session's rates and the transcripts here (JSON)")
    parser.add_argument("--write-card", action="store_true", help="write the figures into the adapter's README.md")
    args = parser.parse_args()

    from scipy import stats

    from cbtcompare.models.registry import Registry
    from cbtcompare.patients import curated_profiles
    from cbtcompare.simulate import SessionSettings, run_group
    from cbtcompare.techniques import CBT_MOVES, cbt_move_rate, technique_rates

    registry = Registry.from_files()
    arms = [args.instruct, args.tuned] + (["smollm2-cbt-prompted"] if args.prompted else [])
    therapists = [registry.load(name) for name in arms]
    patient = registry.load("smollm2-instruct")
    # Profiles that disclose self-harm test the crisis path, not CBT structure; they are left out here.
    profiles = [p for p in curated_profiles() if p.disclosure is None]
    rates: dict[str, list[float]] = {name: [] for name in arms}
    transcripts: dict[str, list] = {name: [] for name in arms}
    sessions = []
    started = time.perf_counter()
    for seed in range(args.seeds):
        for profile in profiles:
            # One sampling for every therapist (the shared rule); only the caps are lowered, to keep this affordable.
            settings = SessionSettings(
                max_turns=args.max_turns,
                seed=1000 + seed,
                stop_on_crisis=True,
                therapist_sampling={"max_tokens": args.therapist_max_tokens},
                patient_sampling={"max_tokens": args.patient_max_tokens},
            )
            group = run_group(therapists, patient, profile, settings)
            row = {"profile": profile.id, "seed": 1000 + seed}
            for name, transcript in zip(arms, group, strict=True):
                try:
                    rate = cbt_move_rate(transcript)
                except ValueError:  # no therapist turn (the patient ended at once): the pair cannot be compared
                    row = None
                    break
                row[name] = rate
                transcripts[name].append(transcript)
            if row is None:
                continue
            for name in arms:
                rates[name].append(row[name])
            sessions.append(row)
            print(json.dumps(row), flush=True)

    instruct, tuned = rates[args.instruct], rates[args.tuned]
    differences = [t - i for t, i in zip(tuned, instruct, strict=True)]
    wilcoxon = stats.wilcoxon(tuned, instruct) if any(differences) else None
    paired_t = stats.ttest_rel(tuned, instruct)
    mean = {name: statistics.fmean(values) for name, values in rates.items()}
    ratio = mean[args.tuned] / mean[args.instruct] if mean[args.instruct] else float("inf")
    moves = {name: {m: round(v, 3) for m, v in technique_rates(transcripts[name]).items() if m in CBT_MOVES}
             for name in arms}
    summary = {
        "pairs": len(sessions),
        "profiles": len(profiles),
        "seeds": args.seeds,
        "max_turns": args.max_turns,
        "mean_rate": {k: round(v, 4) for k, v in mean.items()},
        "ratio": round(ratio, 3),
        "wilcoxon_p": float(wilcoxon.pvalue) if wilcoxon is not None else 1.0,
        "paired_t_p": float(paired_t.pvalue),
        "tuned_better": sum(d > 0 for d in differences),
        "instruct_better": sum(d < 0 for d in differences),
        "ties": sum(d == 0 for d in differences),
        "per_move": moves,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "tuned_adapter_sha256": therapists[1].info().adapter_sha256,
    }
    if args.prompted:
        prompted = rates["smollm2-cbt-prompted"]
        summary["tuned_vs_prompted_wilcoxon_p"] = (
            float(stats.wilcoxon(tuned, prompted).pvalue) if any(t != p for t, p in zip(tuned, prompted, strict=True))
            else 1.0
        )
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({
            "summary": summary, "sessions": sessions,
            "transcripts": {k: [t.model_dump(mode="json") for t in v] for k, v in transcripts.items()},
        }, indent=2))
    if args.write_card:
        write_card(summary, args)
    print(f"ratio={ratio:.3f}")


def write_card(summary: dict, args: argparse.Namespace) -> None:
    """Replace the section between the card's markers with this run's figures."""
    rows = "\n".join(
        f"| {name} | {summary['mean_rate'][name]:.3f} | "
        + " | ".join(f"{summary['per_move'][name][m]:.2f}" for m in sorted(summary["per_move"][name]))
        + " |"
        for name in summary["mean_rate"]
    )
    moves = sorted(next(iter(summary["per_move"].values())))
    extra = ""
    if "tuned_vs_prompted_wilcoxon_p" in summary:
        extra = (f"\nTuned vs the same prompt without the adapter (smollm2-cbt-prompted): Wilcoxon p = "
                 f"{summary['tuned_vs_prompted_wilcoxon_p']:.3g}.\n")
    section = f"""{START}
Measured by `benchmarks/adapter_effect.py{' --prompted' if args.prompted else ''}` ({summary['pairs']} matched pairs:
{summary['profiles']} curated profiles without a crisis disclosure x {summary['seeds']} seeds, {summary['max_turns']}
therapist turns each of at most {args.therapist_max_tokens} tokens, patient smollm2-instruct, the same openings and
seeds on both sides; adapter.gguf sha256 `{summary['tuned_adapter_sha256']}`; {summary['minutes']} minutes).
Score per session: share of therapist turns with at least one CBT move (agenda, Socratic question, homework,
summary, feedback request; the deterministic tagger in cbtcompare/techniques.py).

| therapist | CBT-move rate | {' | '.join(moves)} |
|---|---:|{'---:|' * len(moves)}
{rows}

Ratio tuned / instruct: **{summary['ratio']:.2f}**; Wilcoxon signed-rank p = {summary['wilcoxon_p']:.3g}, paired t
p = {summary['paired_t_p']:.3g}; tuned higher in {summary['tuned_better']} pairs, instruct in
{summary['instruct_better']}, ties {summary['ties']}.{extra}
Note: the tuned side also runs with the CBT system prompt (as the registry's smollm2-cbt does), the instruct side with
the basic session prompt, so the ratio is the effect of the whole CBT variant, not of the adapter alone.
{END}"""
    text = CARD.read_text(encoding="utf-8")
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n## Evidence of effect\n" + section + "\n"
    CARD.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
