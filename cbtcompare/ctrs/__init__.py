"""The CTRS judge: rubrics as data files, any ChatModel as judge, every answer validated, nothing guessed.

- rubric.py    load and check rubric files (cbtcompare/rubrics/*.yaml, or any path)
- render.py    the judge prompts, with the transcript delimited as data by per-call nonce tags
- validate.py  JSON schemas for the answers and the validator (scores in range, quotes really in the turn)
- judge.py     score a transcript (all items in one call, or one call per item), K judges x R repeats,
               per-item median aggregation with the spread
- pairwise.py  matched pairs judged per item in both orders; a win only when both orders agree
- results.py   store and load results, re-score stored transcripts, the long scores table for stats

This package never imports gradio; the Judge tab is a thin layer over these functions.
"""

from __future__ import annotations

from cbtcompare.ctrs.judge import (
    ItemAggregate,
    ItemScore,
    JudgeConfig,
    JudgeResult,
    TranscriptAggregate,
    aggregate_results,
    score_many,
    score_transcript,
)
from cbtcompare.ctrs.pairwise import PairwiseResult, combine_orders, compare_pair
from cbtcompare.ctrs.render import build_score_prompt, neutralise, render_turns
from cbtcompare.ctrs.results import (
    load_pairwise,
    load_results,
    rescore_stored,
    save_pairwise,
    save_results,
    scores_frame,
    transcript_columns,
)
from cbtcompare.ctrs.rubric import Rubric, load_rubric, rubric_names
from cbtcompare.ctrs.validate import check_score_answer, quote_occurs

__all__ = [
    "ItemAggregate",
    "ItemScore",
    "JudgeConfig",
    "JudgeResult",
    "PairwiseResult",
    "Rubric",
    "TranscriptAggregate",
    "aggregate_results",
    "build_score_prompt",
    "check_score_answer",
    "combine_orders",
    "compare_pair",
    "load_pairwise",
    "load_results",
    "load_rubric",
    "neutralise",
    "quote_occurs",
    "render_turns",
    "rescore_stored",
    "rubric_names",
    "save_pairwise",
    "save_results",
    "score_many",
    "score_transcript",
    "scores_frame",
    "transcript_columns",
]
