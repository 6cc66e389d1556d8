"""The settings of a session, and the one rule that turns a spec's sampling plus overrides into a Sampling.

Compare, Simulate, the CLI and the study runner all resolve sampling through `shared_sampling` /
`with_overrides`, so "the same settings" mean the same decoding everywhere: the first therapist's spec
sampling for every therapist, and on top only the fields a caller set explicitly. A pydantic default never
overrides a spec value (a tab that builds `Sampling(temperature=..)` leaves the spec's repeat_penalty alone).
This module decides settings; it never loads a model and never imports gradio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cbtcompare.config_errors import format_validation_error
from cbtcompare.models.base import ModelSpec, Sampling
from cbtcompare.seeds import SEED_SCHEDULE

SummaryPolicy = Literal["none", "prompt", "last_turn"]
SeedScheme = Literal["derive_seed-v1"]  # cbtcompare.seeds.SEED_SCHEME

SamplingOverrides = Sampling | Mapping[str, Any] | None


def explicit_fields(overrides: SamplingOverrides) -> dict[str, Any]:
    """The fields a caller chose: a Sampling's explicitly set fields, a mapping's non-None entries."""
    if overrides is None:
        return {}
    if isinstance(overrides, Sampling):
        return {name: getattr(overrides, name) for name in overrides.model_fields_set}
    return {key: value for key, value in overrides.items() if value is not None}


def with_overrides(base: Sampling, overrides: SamplingOverrides, what: str = "sampling") -> Sampling:
    """`base` with the explicit override fields on top; a bad field is a ValueError naming it."""
    values = explicit_fields(overrides)
    if not values:
        return base
    try:
        return Sampling.model_validate({**base.model_dump(), **values})
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, what, whole="sampling")) from exc


def shared_sampling(specs: Sequence[ModelSpec], overrides: SamplingOverrides = None) -> Sampling:
    """THE shared-sampling rule: the first therapist's spec sampling for everyone, explicit overrides on top."""
    if not specs:
        raise ValueError("shared sampling needs at least one therapist spec")
    return with_overrides(specs[0].sampling, overrides, "therapist sampling")


def _checked_overrides(value: Mapping[str, Any] | Sampling | None, what: str) -> dict[str, Any]:
    """Overrides validated against Sampling (types coerced, ranges checked), keeping only the explicit keys."""
    explicit = explicit_fields(value)
    resolved = with_overrides(Sampling(), explicit, what)
    return {key: getattr(resolved, key) for key in explicit}


class SessionSettings(BaseModel):
    """Everything that shapes a simulated session besides the models and the profile.

    Sampling is given as overrides of the models' spec sampling (resolved by `shared_sampling`); token
    budgets are the overrides' max_tokens and `summary_max_tokens`; the context policy (refuse or trim) is
    each therapist spec's own and applies per session.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_turns: int = Field(6, ge=1, le=200, description="therapist turns per session")
    therapist_sampling: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the first therapist's spec sampling, for every therapist"
    )
    patient_sampling: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the patient model's spec sampling"
    )
    session_prompt: str | None = Field(
        None, description="the therapist system prompt when its spec names none (default: therapist_basic)"
    )
    summary: SummaryPolicy = Field("none", description="closing summary: none, asked by a prompt, or the last turn")
    summary_max_tokens: int = Field(160, ge=1, le=4096, description="budget of the closing summary")
    stop_on_crisis: bool = Field(True, description="on crisis language: one more therapist turn, then stop")
    seed: int = Field(0, description="the run seed every per-turn seed is derived from")
    seed_scheme: SeedScheme = Field("derive_seed-v1", description=SEED_SCHEDULE)

    @field_validator("therapist_sampling", "patient_sampling", mode="before")
    @classmethod
    def _valid_overrides(cls, value: Any, info: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping | Sampling):
            raise ValueError(f"{info.field_name} must be a mapping of sampling fields, e.g. {{max_tokens: 80}}")
        return _checked_overrides(value, info.field_name)

    def therapist_sampling_for(self, specs: Sequence[ModelSpec]) -> Sampling:
        return shared_sampling(specs, self.therapist_sampling)

    def patient_sampling_for(self, spec: ModelSpec) -> Sampling:
        return with_overrides(spec.sampling, self.patient_sampling, "patient sampling")

    def shared_by(self, specs: Sequence[ModelSpec]) -> SessionSettings:
        """These settings with the group's shared therapist sampling pinned, for each therapist's session."""
        return self.model_copy(update={"therapist_sampling": self.therapist_sampling_for(specs).model_dump()})

    def for_course_session(self, session_index: int, sessions: int) -> SessionSettings:
        """The last session of a course leaves no carry-over, so it asks for no summary."""
        return self if session_index < sessions else self.model_copy(update={"summary": "none"})
