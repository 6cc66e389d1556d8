"""Simulated sessions: one session, a matched group of 2-3 therapists, a multi-session course, a batch.

The package re-exports every name other modules import, so `from cbtcompare.simulate import X` keeps working
whichever submodule X lives in. It never imports gradio.
"""

from __future__ import annotations

from cbtcompare.simulate.session import (
    ENDPOINT_BACKENDS,
    FINISHED,
    MAX_GROUP,
    SEED_SCHEDULE,
    SUMMARY_PROMPT,
    BatchConfig,
    BatchProgress,
    BatchResult,
    GroupProgress,
    RoleUsage,
    RunResult,
    RunSpec,
    StopReason,
    SummaryPolicy,
    TranscriptCallback,
    TurnCallback,
    is_endpoint,
    make_opening,
    model_info,
    plan_batch,
    run_batch,
    run_course,
    run_group,
    run_pair,
    run_session,
    stream_group,
    summary_of,
)
from cbtcompare.simulate.settings import SessionSettings, shared_sampling

__all__ = [
    "ENDPOINT_BACKENDS",
    "FINISHED",
    "MAX_GROUP",
    "SEED_SCHEDULE",
    "SUMMARY_PROMPT",
    "BatchConfig",
    "BatchProgress",
    "BatchResult",
    "GroupProgress",
    "RoleUsage",
    "RunResult",
    "RunSpec",
    "SessionSettings",
    "StopReason",
    "SummaryPolicy",
    "TranscriptCallback",
    "TurnCallback",
    "is_endpoint",
    "make_opening",
    "model_info",
    "plan_batch",
    "run_batch",
    "run_course",
    "run_group",
    "run_pair",
    "run_session",
    "shared_sampling",
    "stream_group",
    "summary_of",
]
