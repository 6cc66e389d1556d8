"""The one content-hash helper and the one config-error formatter."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from cbtcompare.config_errors import describe_validation_error, format_validation_error
from cbtcompare.content_hash import content_digest, content_version


@given(st.text())
def test_digest_is_sha256_of_utf8_and_versions_change_with_content(text):
    assert content_digest(text, None) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert content_digest(text) == content_digest(text.encode("utf-8"))
    assert content_version("x", text) != content_version("x", text + " ")


class Arm(BaseModel):
    name: str
    temperature: float


class Study(BaseModel):
    arms: list[Arm]


def test_formatter_names_file_entry_and_field():
    data = {"arms": [{"name": "a", "temperature": 0.2}, {"name": "tuned", "temperature": "hot"}]}
    with pytest.raises(ValidationError) as info:
        Study.model_validate(data)
    (line,) = describe_validation_error(info.value, "study.yaml", data)
    assert line.startswith("study.yaml: arms[1] (name 'tuned').temperature: ")
    assert "(got 'hot')" in line


NESTED = st.recursive(
    st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=30
)


@given(NESTED)
def test_formatter_never_crashes_on_arbitrary_input(data):
    try:
        Study.model_validate(data)
    except ValidationError as exc:
        message = format_validation_error(exc, "f.yaml", data)
        assert message.startswith("f.yaml: ")
