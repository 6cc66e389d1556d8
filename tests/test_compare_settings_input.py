"""The Compare tab's settings as a browser or an API caller sends them, raw (its turns skip Gradio's
preprocessing): a CompareSettings, or a ValueError that says what to change; never another exception."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbtcompare.compare import CompareSettings
from cbtcompare.ui.compare import settings_from

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(values=st.tuples(*[anything] * 8))
def test_any_raw_values_give_settings_or_a_value_error(values):
    try:
        result = settings_from(values)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(result, CompareSettings) and len(result.models) >= 2
    assert all(math.isfinite(v) for v in result.sampling.values())


@pytest.mark.parametrize(
    ("index", "value", "says"),
    [(5, 7.5, "temperature must be between"), (6, "high", "top_p must be a number"), (7, 99999, "max tokens"),
     (8, float("nan"), "seed")],
)
def test_a_value_the_widgets_could_not_send_is_refused_with_what_to_change(index, value, says):
    values = ["a", "b", "(none)", "prompt", 0.7, 0.95, 200, 3]
    values[index - 1] = value
    with pytest.raises(ValueError, match=says):
        settings_from(tuple(values))


def test_what_the_widgets_send_is_taken_as_they_show_it():
    got = settings_from(("a", "b", "(none)", None, 0.7, 0.95, 200.0, 3.0))
    assert got.models == ("a", "b") and got.session_prompt == "" and got.seed == 3
    assert got.sampling == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 200}
