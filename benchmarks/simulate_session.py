"""A 10-turn simulated session on the embedded default: before (KV cache reset per request) vs after
(prefix reuse, with therapist and patient each keeping their own prefix on the shared weights).

Both cases run the same session (same models, profile, settings and seed) through
cbtcompare.simulate.session.run_session in this process; rounds alternate which case goes first. Printed:
the time per case and the speed-up. Last line: ratio=<after / before session time> (below 1 is faster).
Run on an idle machine; `--turns 2 --rounds 1` is a quick check that the script runs.
"""

from __future__ import annotations

import argparse
import os
import time

import _common

from cbtcompare.models.llamacpp import LlamaCppModel, keep_prefix_per_role
from cbtcompare.models.registry import Registry
from cbtcompare.patients import curated_profiles
from cbtcompare.simulate.session import run_session
from cbtcompare.simulate.settings import SessionSettings

THERAPIST, PATIENT = "smollm2-cbt-prompted", "smollm2-instruct"


def one_session(therapist: LlamaCppModel, patient: LlamaCppModel, turns: int, *, reuse: bool) -> float:
    os.environ["CBTCOMPARE_PREFIX_REUSE"] = "1" if reuse else "0"
    for model in (therapist, patient):
        model.shared.forget_caches()
    settings = SessionSettings(max_turns=turns, seed=7, stop_on_crisis=False)
    started = time.perf_counter()
    run_session(therapist, patient, curated_profiles()[0], settings)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    registry = Registry.from_files()
    therapist, patient = registry.load(THERAPIST), registry.load(PATIENT)
    assert isinstance(therapist, LlamaCppModel) and isinstance(patient, LlamaCppModel)
    # both roles are on one weights file: two warm contexts, so each keeps its own prefix (+1 KV cache,
    # about 47 MiB for the default model at n_ctx 2048)
    keep_prefix_per_role([therapist, patient])
    timings: dict[str, list[float]] = {"before": [], "after": []}
    for round_index in range(args.rounds):
        cases = ["before", "after"] if round_index % 2 == 0 else ["after", "before"]
        for case in cases:
            timings[case].append(one_session(therapist, patient, args.turns, reuse=case == "after"))
    before, after = _common.median(timings["before"]), _common.median(timings["after"])
    print(f"{args.turns}-turn simulated session ({THERAPIST} vs {PATIENT}), medians of {args.rounds} rounds")
    print(f"before (reset per request): {before:.2f} s")
    print(f"after (prefix reuse):       {after:.2f} s   speed-up {before / after:.2f}x")
    registry.close()
    print(f"ratio={after / before:.3f}")


if __name__ == "__main__":
    main()
