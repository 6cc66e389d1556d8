"""Transcripts: the turn and transcript types, the one place chat messages are built from them, and JSON I/O.

A transcript is one conversation between a therapist (a model) and a patient (a person or a simulated
patient). Roles are the study's own words, "therapist" and "patient"; `therapist_messages` and
`patient_messages` turn a transcript into chat messages from either side's point of view.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cbtcompare.models.base import Message

TurnRole = Literal["therapist", "patient"]


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: TurnRole
    text: str
    flags: dict[str, Any] = Field(default_factory=dict, description="e.g. crisis categories, fidelity problems")
    tokens: int | None = None
    seconds: float | None = None
    seed: int | None = Field(None, description="the sampling seed that produced this turn (model turns)")


class Transcript(BaseModel):
    """One therapist model's side of a session, with everything needed to reproduce it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    group_id: str | None = Field(None, description="shared by the panes of one comparison or one matched pair")
    kind: str = Field("compare", description="compare, simulation or import")
    created_at: str = Field(default_factory=utc_now)
    therapist: dict[str, Any] = Field(default_factory=dict, description="ModelInfo of the therapist model")
    system_prompt: str | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    prompt_versions: dict[str, str] = Field(default_factory=dict)
    context_policy: str | None = None
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
