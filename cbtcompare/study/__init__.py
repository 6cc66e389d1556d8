"""Studies: one YAML file -> plan -> simulate -> quality gate -> judge -> report, resumable at every step.

- spec.py      the study file (StudySpec, a pydantic model with field descriptions) and its loader
- plan.py      where a study lives, which models are missing, what is done and due, time estimates
- run.py       run or resume a study; every unit stored in its own transaction, done units skipped
- results.py   the study's scores table, pairwise win rates with order-flip rates, the report
- manifest.py  what a study output was made from (file + hash, code, model hashes, prompts, seeds)

This package never imports gradio; the Study tab and `python -m cbtcompare study` are thin layers over it.
"""

from __future__ import annotations

from cbtcompare.study.plan import StudyNotReady, estimate, output_folder, readiness, study_state
from cbtcompare.study.run import run_study
from cbtcompare.study.spec import StudyFile, StudyFileInvalid, StudySpec, load_study, parse_study

__all__ = [
    "StudyFile",
    "StudyFileInvalid",
    "StudyNotReady",
    "StudySpec",
    "estimate",
    "load_study",
    "output_folder",
    "parse_study",
    "readiness",
    "run_study",
    "study_state",
]
