"""Simulated sessions: one session, a matched group of 1-3 therapists, a multi-session course, a batch.

session.py runs one session; group.py matched groups, courses and the one course runner; batch.py stored,
resumable batches; settings.py the SessionSettings and the shared-sampling rule; fanout.py the one
fan-out-and-stop helper. This package re-exports every name other modules import, so
`from cbtcompare.simulate import X` works whichever submodule X lives in. It never imports gradio.
"""

from __future__ import annotations

from cbtcompare.fanout import Outcome, fan_out
from cbtcompare.seeds import SEED_SCHEDULE
from cbtcompare.simulate.batch import (
    FINISHED,
    BatchConfig,
    BatchProgress,
    BatchResult,
    RunResult,
    RunSpec,
    plan_batch,
    run_batch,
)
from cbtcompare.simulate.group import (
    MAX_GROUP,
    GroupHooks,
    GroupProgress,
    run_course,
    run_course_sessions,
    run_group,
    run_pair,
    stream_group,
)
from cbtcompare.simulate.session import (
    SUMMARY_PROMPT,
    RoleUsage,
    SessionPlace,
    StopReason,
    TranscriptCallback,
    TurnCallback,
    is_endpoint,
    make_opening,
    model_info,
    run_session,
    summary_of,
)
from cbtcompare.simulate.settings import SessionSettings, SummaryPolicy, shared_sampling

__all__ = [
    "ENDPOINT_BACKENDS",
    "FINISHED",
    "MAX_GROUP",
    "SEED_SCHEDULE",
    "SUMMARY_PROMPT",
    "BatchConfig",
    "BatchProgress",
    "BatchResult",
    "GroupHooks",
    "GroupProgress",
    "Outcome",
    "RoleUsage",
    "RunResult",
    "RunSpec",
    "SessionPlace",
    "SessionSettings",
    "StopReason",
    "SummaryPolicy",
    "TranscriptCallback",
    "TurnCallback",
    "fan_out",
    "is_endpoint",
    "make_opening",
    "model_info",
    "plan_batch",
    "run_batch",
    "run_course",
    "run_course_sessions",
    "run_group",
    "run_pair",
    "run_session",
    "shared_sampling",
    "stream_group",
    "summary_of",
]


def __getattr__(name: str) -> object:
    # Kept for cbtcompare.study.plan: the remote backends, read from the backend classes' capability flags
    # (cbtcompare.models.registry), computed on first use so importing simulate imports no backend module.
    if name == "ENDPOINT_BACKENDS":
        from cbtcompare.models.registry import backends_with

        return backends_with("remote")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
