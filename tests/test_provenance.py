"""One classification of what a model is, whichever tab or command made its transcript."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cbtcompare import provenance
from cbtcompare.models.base import ModelSpec

GGUF = "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:SmolLM2-135M-Instruct.Q4_1.gguf"


def spec(**fields):
    return ModelSpec.model_validate({"name": "m", "backend": "llamacpp", "weights": GGUF, **fields})


def test_prompted_model_is_prompted_and_shares_the_base_family():
    base = provenance.describe(spec(name="smollm2-instruct"))
    prompted = provenance.describe(spec(name="smollm2-cbt-prompted", system_prompt="therapist_cbt"))
    tuned = provenance.describe(spec(name="my-model", adapter="adapters/x/x.gguf"))
    assert (base.variant, prompted.variant, tuned.variant) == ("base", "prompted", "tuned")
    assert base.family == prompted.family == tuned.family == "smollm2"


def test_unknown_family_falls_back_to_the_weights_stem_shared_with_adapters():
    base = provenance.describe(spec(name="alpha", weights="/models/Zephyr-7B.Q4_K_M.gguf"))
    tuned = provenance.describe(spec(name="beta", weights="/models/Zephyr-7B.Q4_K_M.gguf", adapter="a.gguf"))
    assert base.family == tuned.family == "zephyr-7b.q4_k_m"


def test_stored_record_is_classified_like_its_spec_and_recorded_values_win():
    record = {"name": "smollm2-cbt-prompted", "spec": spec(name="smollm2-cbt-prompted").model_dump(mode="json")}
    assert provenance.of_record(record) == ("prompted", "smollm2")
    assert provenance.of_record(record, {"variant": "base", "family": "x"}) == ("base", "x")
    assert provenance.of_record({"name": "unknown"}) == ("unassigned", "unknown")


ANY_VALUE = st.one_of(st.none(), st.text(), st.integers(), st.dictionaries(st.text(), st.text()))


@given(st.dictionaries(st.text(), ANY_VALUE))
def test_any_record_gives_a_known_variant(record):
    variant, family = provenance.of_record(record)
    assert variant in provenance.VARIANTS and isinstance(family, str)
