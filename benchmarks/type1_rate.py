"""False-positive rate of the old (session-cell) and new (patient-level) tuned-vs-base analyses.

Simulates null datasets in the shape of a study: 3 families x 20 patients x 4 sessions x base/tuned, 11
CTRS items 1-10 seen by one judge. The tuning effect is 0 on average but varies by patient (SD 4 total
points by default), with a patient intercept (SD 4) and session noise (SD 6). Each dataset goes through
the public functions: the old analysis is cbtcompare.stats.paired_comparison's total row (a paired t
over session cells), the new primary one cbtcompare.stats.patient_level.patient_level_comparison's
(a paired t over patient means); `--slope-model` adds the random-slope mixed model (slow). Prints each
rejection rate at alpha 0.05 with its binomial 95% CI; last line: ratio=<new rate / 0.05> (target ~1).
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import pandas as pd
from scipy import stats as sps

from cbtcompare.stats import CTRS_ITEMS, paired_comparison
from cbtcompare.stats.patient_level import patient_level_comparison, random_slope_model

FAMILIES = ("llama-8b", "qwen-7b", "mistral-7b")
ALPHA = 0.05


def null_dataset(rng: np.random.Generator, patients: int, sessions: int, slope_sd: float) -> pd.DataFrame:
    """Long scores table with no average tuning effect and a per-patient one of SD `slope_sd`."""
    intercept = rng.normal(0, 4.0, patients)
    slope = rng.normal(0, slope_sd, patients)
    offsets = np.linspace(-1.0, 1.0, len(CTRS_ITEMS))
    rows = []
    for family in FAMILIES:
        for patient in range(patients):
            for session in range(1, sessions + 1):
                for variant in ("base", "tuned"):
                    latent = 50 + intercept[patient] + (slope[patient] if variant == "tuned" else 0) + rng.normal(0, 6)
                    items = np.clip(np.rint(latent / len(CTRS_ITEMS) + offsets + rng.normal(0, 0.8, 11)), 1, 10)
                    for item, value in zip(CTRS_ITEMS, items, strict=True):
                        rows.append(
                            (f"{family}-{variant}-p{patient}-s{session}", f"{family}-{variant}", family, variant,
                             f"p{patient}", session, "judge", 0, item, float(value), "scored")
                        )  # fmt: skip
    columns = ["transcript_id", "therapist", "family", "variant", "patient_id", "session", "judge", "repeat"]
    return pd.DataFrame(rows, columns=[*columns, "item", "score", "status"])


def rate_line(name: str, rejections: int, runs: int) -> str:
    interval = sps.binomtest(rejections, runs).proportion_ci(0.95)
    return f"{name}: {rejections}/{runs} = {rejections / runs:.3f} (95% CI {interval.low:.3f}-{interval.high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--slope-sd", type=float, default=4.0, help="between-patient SD of the tuning effect")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--slope-model", action="store_true", help="also fit the random-slope model (slow)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    old = new = slope = slope_fitted = 0
    started = time.perf_counter()
    for _ in range(args.datasets):
        scores = null_dataset(rng, args.patients, args.sessions, args.slope_sd)
        old += paired_comparison(scores).set_index("measure").loc["total", "p_t"] < ALPHA
        new += patient_level_comparison(scores).set_index("measure").loc["total", "p_t"] < ALPHA
        if args.slope_model:
            fit = random_slope_model(scores)
            if not fit.withheld:
                slope_fitted += 1
                slope += fit.p_wald < ALPHA
    print(
        f"{args.datasets} null datasets: {len(FAMILIES)} families x {args.patients} patients x {args.sessions} "
        f"sessions, tuning effect mean 0, SD {args.slope_sd:g} between patients ({time.perf_counter() - started:.0f}s)"
    )
    print(rate_line("old: paired t over session cells", old, args.datasets))
    print(rate_line("new: paired t over patient means (primary)", new, args.datasets))
    if args.slope_model:
        print(rate_line("random-slope model, Wald z (fits not withheld)", slope, max(slope_fitted, 1)))
        print(f"random-slope model withheld (degenerate or not converged): {args.datasets - slope_fitted}")
    print(f"ratio={new / args.datasets / ALPHA:.3f}")


if __name__ == "__main__":
    main()
