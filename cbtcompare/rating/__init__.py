"""Blind human rating of paired transcripts: studies, raters, blinding that holds, reliability.

- study.py     choose pairs (stored matched pairs or an uploaded JSONL), create a study: scrubbed display
               text, invite codes, per-rater assignments with a seeded order and side mapping
- rater.py     the rater's flow: join by code, next unrated pair, validate and store one rating (after
               the pair's minimum reading time, counted on the server's clock)
- view.py      the rater's HTML (two scrubbed transcripts side by side, a progress bar)
- analysis.py  admin only: progress, CSV/JSONL export, unblinding report, reliability, judge agreement
- export_format.py  spreadsheet-safe CSV cells, strict JSON (null for NaN), scores checked on reading back
- access.py    the admin secret (CBTCOMPARE_ADMIN_SECRET)

Nothing here imports gradio; the Rate tab (cbtcompare.ui.rate) only wires widgets to these functions.
Only rater.py and view.py produce what a rater sees, and they never carry model-identifying data.
"""

from __future__ import annotations

from cbtcompare.rating.access import ADMIN_SECRET_ENV, AdminRefused, admin_enabled, require_admin
from cbtcompare.rating.analysis import (
    ReliabilityReport,
    UnblindingReport,
    export_records,
    human_scores,
    icc_2_1,
    judge_agreement,
    krippendorff_alpha,
    progress_tables,
    read_export,
    reliability,
    unblinding_report,
    write_export,
)
from cbtcompare.rating.export_format import RatingsFileError, read_long_ratings
from cbtcompare.rating.rater import (
    READING_WPM_ENV,
    AlreadyRated,
    IncompleteRating,
    NotReadToEnd,
    PairView,
    RaterSession,
    RatingAnswer,
    RatingError,
    ReadingPace,
    ReadTooFast,
    UnknownCode,
    join,
    next_pair,
    progress,
    read_flag_ok,
    reading_seconds_left,
    submit,
)
from cbtcompare.rating.study import (
    CONFIDENCE_LEVELS,
    QUERY_HELP,
    CreatedStudy,
    MatchedPair,
    PairSource,
    Study,
    StudyChoices,
    StudySpec,
    create_study,
    get_study,
    invite_codes,
    list_studies,
    matched_pairs,
    resolve_pairs,
    store_uploaded_pairs,
    uploaded_pairs,
)

__all__ = [
    "ADMIN_SECRET_ENV",
    "CONFIDENCE_LEVELS",
    "QUERY_HELP",
    "READING_WPM_ENV",
    "AdminRefused",
    "AlreadyRated",
    "CreatedStudy",
    "IncompleteRating",
    "MatchedPair",
    "NotReadToEnd",
    "PairSource",
    "PairView",
    "RaterSession",
    "RatingAnswer",
    "RatingError",
    "RatingsFileError",
    "ReadTooFast",
    "ReadingPace",
    "ReliabilityReport",
    "Study",
    "StudyChoices",
    "StudySpec",
    "UnblindingReport",
    "UnknownCode",
    "admin_enabled",
    "create_study",
    "export_records",
    "get_study",
    "human_scores",
    "icc_2_1",
    "invite_codes",
    "join",
    "judge_agreement",
    "krippendorff_alpha",
    "list_studies",
    "matched_pairs",
    "next_pair",
    "progress",
    "progress_tables",
    "read_export",
    "read_flag_ok",
    "read_long_ratings",
    "reading_seconds_left",
    "reliability",
    "require_admin",
    "resolve_pairs",
    "store_uploaded_pairs",
    "submit",
    "unblinding_report",
    "uploaded_pairs",
    "write_export",
]
