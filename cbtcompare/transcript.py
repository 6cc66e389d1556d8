"""Transcripts: the turn and transcript types, the one place chat messages are built from them, and JSON I/O.

A transcript is one conversation between a therapist (a model) and a patient (a person or a simulated
patient). Roles are the study's own words, "therapist" and "patient"; `therapist_messages` and
`patient_messages` turn a transcript into chat messages from either side's point of view.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cbtcompare.limits import INT64_MAX, INT64_MIN
from cbtcompare.models.base import Message

TurnRole = Literal["therapist", "patient"]
# Seeds and token counts are stored in 64-bit integer columns; a larger number is refused here, by name.
StoredInt = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: TurnRole
    text: str
    flags: dict[str, Any] = Field(default_factory=dict, description="e.g. crisis categories, fidelity problems")
    tokens: StoredInt | None = None
    seconds: float | None = Field(None, allow_inf_nan=False)
    seed: StoredInt | None = Field(None, description="the sampling seed that produced this turn (model turns)")


class Transcript(BaseModel):
    """One therapist model's side of a session, with everything needed to reproduce it."""

    model_config = ConfigDict(extra="forbid")

    # Lengths are the store's column widths, so a too-long value is refused here rather than by the database.
    id: str = Field(default_factory=new_id, max_length=64)
    group_id: str | None = Field(
        None, max_length=64, description="shared by the panes of one comparison or one matched pair"
    )
    kind: str = Field("compare", max_length=32, description="compare, simulation or import")
    created_at: str = Field(default_factory=utc_now, max_length=40)
    therapist: dict[str, Any] = Field(default_factory=dict, description="ModelInfo of the therapist model")
    system_prompt: str | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)
    seed: StoredInt | None = None
    prompt_versions: dict[str, str] = Field(default_factory=dict)
    context_policy: str | None = Field(None, max_length=20)
    meta: dict[str, Any] = Field(default_factory=dict)
    turns: list[Turn] = Field(default_factory=list)

    @property
    def therapist_name(self) -> str:
        return str(self.therapist.get("name", "unknown"))

    def to_json_line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, sort_keys=True)


def therapist_messages(turns: list[Turn], system_prompt: str | None) -> list[Message]:
    """The conversation as the therapist model sees it: patient = user, therapist = assistant."""
    messages = [Message("system", system_prompt)] if system_prompt else []
    messages += [Message("user" if t.role == "patient" else "assistant", t.text) for t in turns]
    return messages


def patient_messages(turns: list[Turn], system_prompt: str) -> list[Message]:
    """The conversation as the simulated patient sees it: therapist = user, patient = assistant."""
    messages = [Message("system", system_prompt)]
    messages += [Message("user" if t.role == "therapist" else "assistant", t.text) for t in turns]
    return messages
