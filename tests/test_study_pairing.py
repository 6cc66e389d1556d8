"""Base <-> tuned pairing from the registry (an adapter pairs with the base on its weights) when a family
holds two base models, through `python -m cbtcompare report`; ambiguity is refused naming the therapists.
Planted data with a known answer: the tuned adapter is 4 points above its own base, 15 above the other."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_stats import JUDGES, make_planted_scores

from cbtcompare import cli, stats
from cbtcompare.models.base import ModelSpec
from cbtcompare.models.registry import Registry
from cbtcompare.study.pairing import AmbiguousPairing, registry_pairs

OTHER_BASE = "smollm2-360m-instruct"


def two_bases_one_family() -> pd.DataFrame:
    """smollm2-cbt = smollm2-instruct + 4 points; a second base of the same family sits 11 points lower."""
    scores = make_planted_scores(n_patients=30, n_sessions=2, judges=JUDGES[:1], effect=4.0, families={"smollm2": 0.0})
    scores["therapist"] = scores["variant"].map({"base": "smollm2-instruct", "tuned": "smollm2-cbt"})
    other = scores[scores["variant"] == "base"].copy()
    other["therapist"] = OTHER_BASE
    other["transcript_id"] = "other-" + other["transcript_id"]
    other["score"] = (other["score"] - 1.0).clip(lower=1.0)  # -1 per item: 11 points on the total
    return pd.concat([scores, other], ignore_index=True)


def other_base_models_file(tmp_path: Path, weights: str) -> Path:
    path = tmp_path / "models.yaml"
    spec = {"name": OTHER_BASE, "backend": "llamacpp", "weights": weights, "description": "a second base"}
    path.write_text(yaml.safe_dump({"models": [spec]}), encoding="utf-8")
    return path


def test_the_registry_pairs_the_adapter_with_its_own_base_and_the_report_finds_the_planted_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    scores = two_bases_one_family()
    with pytest.raises(stats.AnalysisError, match=rf"smollm2-instruct.*{OTHER_BASE}|{OTHER_BASE}.*smollm2-instruct"):
        stats.resolve_pairing(scores)  # by family alone it is ambiguous, and says which therapists
    monkeypatch.setenv("CBTCOMPARE_MODELS", str(other_base_models_file(tmp_path, "/models/smollm2-360m.gguf")))
    assert registry_pairs(Registry.from_files(), scores["therapist"].unique()) == [("smollm2-instruct", "smollm2-cbt")]
    csv = tmp_path / "scores.csv"
    scores.to_csv(csv, index=False)
    assert cli.main(["report", "--scores", str(csv), "--out", str(tmp_path / "report")]) == 0
    summary = pd.read_csv(tmp_path / "report" / "tuned_vs_base.csv").set_index("analysis")
    primary = summary.loc["primary: patient means"]
    # averaging the two bases (the old pairing) would give 4 + 11 / 2 = 9.5
    assert primary["ci_low"] < 4.0 < primary["ci_high"] and primary["ci_high"] < 9.5 and primary["n_units"] == 30
    pairing = pd.read_csv(tmp_path / "report" / "pairing.csv").fillna("")
    assert pairing.loc[pairing["pair"] == "", "unmatched_control"].tolist() == [60]  # the other base, counted


def test_two_bases_on_the_adapters_weights_are_refused_naming_both():
    registry = Registry.from_files()
    registry.add(ModelSpec(name=OTHER_BASE, backend="llamacpp", weights="embedded:smollm2"))
    with pytest.raises(AmbiguousPairing, match=rf"smollm2-cbt.*{OTHER_BASE}, smollm2-instruct|smollm2-instruct"):
        registry_pairs(registry, ["smollm2-instruct", OTHER_BASE, "smollm2-cbt"])
    assert registry_pairs(registry, ["smollm2-instruct", "smollm2-cbt-prompted", "unknown-model"]) == []
