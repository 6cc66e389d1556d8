"""Rate tab: blind rating of paired transcripts (rater flow) and the study admin area, wired to cbtcompare.rating.

Rater side: invite code -> next unrated pair (both transcripts whole, scrubbed, side by side; never
streamed) -> scales -> submit, unlocked once the page reports both transcripts read to the end ->
next pair. Only cbtcompare.rating.rater / view produce what is sent to a rater; the per-user
RaterSession stays on the server in gr.State, and with it the server's clock for the pair's minimum
reading time. Admin side: every event checks the admin secret first; in rating mode
(CBTCOMPARE_MODE=rating) the admin panel and its endpoints are not built at all.
"""

from __future__ import annotations

import functools
import math
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path

import gradio as gr
import pandas as pd

from cbtcompare import rating
from cbtcompare.access import admin_panel_allowed
from cbtcompare.ctrs.rubric import load_rubric
from cbtcompare.rating.view import pair_html, progress_html
from cbtcompare.ui import REFRESH_S, AppContext, app_mode, check_upload_size, require_admin, ui_copy

TITLE = "Rate"
ITEM_IDS: list[str] = load_rubric("paper").item_ids
DEFAULT_LEVELS = list(range(1, 11))
PREFERENCE_CHOICES = [("A", "A"), ("B", "B"), ("Tie", "tie")]
CONFIDENCE_WORDS = {1: "a guess", 3: "fairly sure", 5: "certain"}
ASKS = ["preference", "confidence", "items", "comment"]
RATING_EVENTS = {"concurrency_limit": None, "concurrency_id": "rating"}
# The arena's one-click verdicts, right under the pair: (button label, elem_id suffix, what the rater means).
VERDICTS = [
    ("A is better", "a", "A"),
    ("B is better", "b", "B"),
    ("Tie", "tie", "tie"),
    ("Both bad", "bad", "both_bad"),
]
VERDICT_WORDS = {"A": "A is better", "B": "B is better", "tie": "a tie", "both_bad": "both bad"}
READ_HINT = "*The verdict buttons open once you have scrolled both transcripts to the end.*"


@cache
def read_tracker_js() -> str:
    return (resources.files("cbtcompare.ui") / "copy" / "rate_read_tracker.js").read_text(encoding="utf-8")


def confidence_choices() -> list[tuple[str, int]]:
    return [(f"{n} {CONFIDENCE_WORDS[n]}" if n in CONFIDENCE_WORDS else str(n), n) for n in rating.CONFIDENCE_LEVELS]


def scale_text(study: rating.Study) -> str:
    if not study.rubric:
        return ""
    labels = " · ".join(f"{level} {label}" for level, label in sorted(study.rubric["scale"]["labels"].items()))
    return f"**Score each item for both transcripts** ({study.rubric['name']}): {labels}"


def render(context: AppContext) -> None:
    store = context.store
    rating.ReadingPace.from_env()  # a bad CBTCOMPARE_READING_WPM stops the app at start, saying what to set
    session_state = gr.State(None)
    gr.Markdown(ui_copy("rate_intro"))
    with gr.Row(equal_height=True):
        code = gr.Textbox(label="Invite code", placeholder="ABCD-EFGH-JKMN", elem_id="rate-code", scale=3)
        start = gr.Button("Start / resume", variant="primary", elem_id="rate-start", scale=1)
    status = gr.Markdown(elem_id="rate-status")
    progress_bar = gr.HTML(elem_id="rate-progress")
    pair_view = gr.HTML(elem_id="rate-pair", js_on_load=read_tracker_js())
    read_flag = gr.Textbox(visible="hidden", elem_id="rate-read-flag", label="read to the end")
    saved = gr.Markdown(elem_id="rate-saved")
    with gr.Column(visible=False, elem_id="rate-form") as form:
        gr.Markdown(READ_HINT, elem_id="rate-read-hint")
        confidence = gr.Radio(confidence_choices(), label="How sure are you?", elem_id="rate-confidence")
        with gr.Row(elem_id="rate-verdicts") as verdict_row:
            verdict_buttons = [
                gr.Button(label, interactive=False, elem_id=f"rate-verdict-{suffix}", min_width=120)
                for label, suffix, _ in VERDICTS
            ]
        with gr.Accordion("CTRS item scores", open=True, elem_id="rate-items") as items_box:
            scale_help = gr.Markdown(elem_id="rate-scale-help")
            radios: dict[str, list[gr.Dropdown]] = {"A": [], "B": []}
            for item_id in ITEM_IDS:
                with gr.Row(equal_height=True):
                    for side in ("A", "B"):
                        radios[side].append(
                            gr.Dropdown(
                                choices=DEFAULT_LEVELS,
                                label=f"{item_id} ({side})",
                                elem_id=f"rate-{side}-{item_id}",
                                min_width=160,
                            )
                        )
        comment = gr.Textbox(label="Comment (optional)", lines=2, max_length=5000, elem_id="rate-comment")
        # The preference radio and Submit serve studies without a preference (items only) and the API.
        preference = gr.Radio(
            PREFERENCE_CHOICES,
            label="Overall, which transcript shows the better CBT?",
            elem_id="rate-preference",
            visible=False,
        )
        submit = gr.Button("Submit rating", variant="primary", interactive=False, elem_id="rate-submit")

    view_outputs = [
        session_state,
        status,
        progress_bar,
        pair_view,
        form,
        items_box,
        scale_help,
        *radios["A"],
        *radios["B"],
        preference,
        confidence,
        comment,
        submit,
        saved,
        verdict_row,
        *verdict_buttons,
    ]

    def show_next(session: rating.RaterSession, saved_text: str = "") -> list[object]:
        """The rater's next pair (or the end), with every field cleared; nothing but scrubbed text and progress."""
        study = rating.get_study(store, session.study_id)
        view = rating.next_pair(store, session)
        done = rating.progress(store, session.rater_id)
        locked = [gr.update(interactive=False)] * len(VERDICTS)
        if view is None:
            hidden = [gr.update(value=None)] * (2 * len(ITEM_IDS) + 2)
            return [
                session,
                ui_copy("rate_done"),
                progress_html(done),
                "",
                gr.update(visible=False),
                gr.update(),
                "",
                *hidden,
                gr.update(value=""),
                gr.update(interactive=False),
                saved_text,
                gr.update(visible=False),
                *locked,
            ]
        items = {i["id"]: i for i in (study.rubric or {}).get("items", [])}
        radio_updates = [
            gr.update(
                value=None,
                choices=study.levels or DEFAULT_LEVELS,
                label=f"{items[item_id]['name'] if item_id in items else item_id} ({side})",
                visible=item_id in items,
            )
            for side in ("A", "B")
            for item_id in ITEM_IDS
        ]
        asks_preference = study.choices.preference
        return [
            session,
            f"**Pair {view.position} of {view.total}.** Read both transcripts to the end, then give your verdict "
            f"under them (it opens after about {math.ceil(view.min_reading_seconds)} s of reading).",
            progress_html(done),
            pair_html(view),
            gr.update(visible=True),
            gr.update(visible=study.choices.items),
            scale_text(study),
            *radio_updates,
            gr.update(value=None, visible=False),
            gr.update(value=None, visible=study.choices.confidence),
            gr.update(value="", visible=study.choices.comment),
            gr.update(interactive=False, visible=not asks_preference),
            saved_text,
            gr.update(visible=asks_preference),
            *locked,
        ]

    def on_start(code_text: str, _session: rating.RaterSession | None) -> list[object]:
        try:
            session = rating.join(store, code_text)
        except rating.RatingError as exc:
            raise gr.Error(str(exc)) from exc
        return show_next(session)

    def answer_of(pref: str | None, conf: int | None, note: str, scores: tuple[int, ...]) -> rating.RatingAnswer:
        half = len(ITEM_IDS)
        return rating.RatingAnswer(
            preference=pref or None,
            confidence=int(conf) if conf not in (None, "") else None,
            scores={
                "A": dict(zip(ITEM_IDS, scores[:half], strict=True)),
                "B": dict(zip(ITEM_IDS, scores[half:], strict=True)),
            },
            comment=note or "",
        )

    def saved_message(before: rating.Progress, verdict: str | None) -> str:
        said = f": {VERDICT_WORDS[verdict]}" if verdict else ""
        return f"✓ **Saved** pair {before.done + 1} of {before.total}{said}."

    def on_submit(
        session: rating.RaterSession | None, flag: str, pref: str | None, conf: int | None, note: str, *scores: int
    ) -> list[object]:
        if session is None:
            raise gr.Error("Enter your invite code first.")
        before = rating.progress(store, session.rater_id)
        try:
            rating.submit(store, session, answer_of(pref, conf, note, scores), read_flag=flag)
        except rating.RatingError as exc:
            raise gr.Error(str(exc)) from exc
        return show_next(session, saved_message(before, pref))

    def inline(message: str) -> list[object]:
        """Every view output left as it is but the line under the pair, which says `message`."""
        kept: list[object] = [gr.skip()] * len(view_outputs)
        kept[view_outputs.index(saved)] = message
        return kept

    def on_verdict(
        verdict: str, session: rating.RaterSession | None, flag: str, conf: int | None, note: str, *scores: int
    ) -> list[object]:
        """One click: the verdict and whatever else the study asks, stored; or, in words under the pair, why not."""
        if session is None:
            return inline("Enter your invite code first.")
        before = rating.progress(store, session.rater_id)
        try:
            rating.submit(store, session, answer_of(verdict, conf, note or "", scores), read_flag=flag)
        except rating.RatingError as exc:
            return inline(f"⚠ {exc}")
        return show_next(session, saved_message(before, verdict))

    def on_read(session: rating.RaterSession | None, flag: str) -> list[object]:
        ready = session is not None and rating.read_flag_ok(session, flag)
        return [gr.update(interactive=ready)] * (1 + len(VERDICTS))

    start.click(on_start, [code, session_state], view_outputs, api_name="rate_start", **RATING_EVENTS)
    code.submit(on_start, [code, session_state], view_outputs, api_name=False, **RATING_EVENTS)
    submit.click(
        on_submit,
        [session_state, read_flag, preference, confidence, comment, *radios["A"], *radios["B"]],
        view_outputs,
        api_name="rate_submit",
        **RATING_EVENTS,
    )
    for button, (_, suffix, verdict) in zip(verdict_buttons, VERDICTS, strict=True):
        button.click(
            functools.partial(on_verdict, verdict),
            [session_state, read_flag, confidence, comment, *radios["A"], *radios["B"]],
            view_outputs,
            api_name=f"rate_verdict_{suffix}",
            **RATING_EVENTS,
        )
    read_flag.change(
        on_read, [session_state, read_flag], [submit, *verdict_buttons], api_name="rate_read", **RATING_EVENTS
    )
    if admin_panel_allowed(app_mode()):
        render_admin(context)


# Admin ------------------------------------------------------------------------------------------------


def _require_admin(secret: str | None) -> None:
    require_admin(secret)  # the app's one admin gate: counts wrong secrets per client and overall


def study_choices(store) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [
        (f"{s.name} · {s.pairs} pairs · {s.ratings}/{s.assignments} rated · {s.id[:8]}", s.id)
        for s in rating.list_studies(store)
    ]


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    """A table for the admin's screen: rounded, and undefined statistics (NaN) sent as null, not NaN."""
    if not len(frame):
        return pd.DataFrame({"": ["(none yet)"]})
    rounded = frame.round(3)
    return rounded.astype(object).where(rounded.notna(), None)


def render_admin(context: AppContext) -> None:
    store = context.store
    with gr.Accordion("Study admin", open=False, elem_id="rate-admin"):
        gr.Markdown(ui_copy("rate_admin"))
        secret = gr.Textbox(label="Admin secret", type="password", elem_id="rate-admin-secret")
        gr.Markdown("#### New study")
        with gr.Row():
            pairs_query = gr.Textbox("all", label="Stored matched pairs", info=rating.QUERY_HELP)
            pairs_file = gr.File(label="... or upload pairs (JSONL)", file_types=[".jsonl"], type="filepath")
        with gr.Row():
            rubric = gr.Radio(["paper", "classic", "none"], value="paper", label="Rubric for item scores")
            asks = gr.CheckboxGroup(ASKS, value=ASKS, label="Raters give")
        with gr.Row():
            raters = gr.Number(3, precision=0, minimum=1, label="Raters (one invite code each)")
            per_pair = gr.Number(0, precision=0, minimum=0, label="Raters per pair (0 = every rater)")
            seed = gr.Number(0, precision=0, label="Randomisation seed")
            name = gr.Textbox(label="Study name")
        create = gr.Button("Create study", elem_id="rate-admin-create")
        created = gr.Textbox(
            label="Study id and invite codes", lines=6, interactive=False, elem_id="rate-admin-created"
        )
        gr.Markdown("#### Studies")
        with gr.Row():
            study = gr.Dropdown(
                choices=[],
                label="Study (pick, or paste an id)",
                allow_custom_value=True,
                elem_id="rate-admin-study",
                scale=3,
            )
            refresh = gr.Button("Load studies", scale=1)
        with gr.Row():
            show_progress = gr.Button("Progress")
            show_report = gr.Button("Unblinding report and reliability")
            export_csv = gr.Button("Export CSV")
            export_jsonl = gr.Button("Export JSONL")
        export_file = gr.File(label="Export", interactive=False)
        # Once this session has shown the right secret, the studies list follows the store (REFRESH_S).
        admin_ok = gr.State(False)
        listed = gr.State(None)
        timer = gr.Timer(REFRESH_S)
        summary = gr.Markdown(elem_id="rate-admin-summary")
        per_rater = gr.Dataframe(label="Progress per rater", interactive=False)
        per_pair_table = gr.Dataframe(label="Progress per pair", interactive=False)
        preference_table = gr.Dataframe(label="Preference per model (sides undone)", interactive=False)
        head_to_head = gr.Dataframe(label="Head to head", interactive=False)
        item_table = gr.Dataframe(label="Item means per model", interactive=False)
        alpha_table = gr.Dataframe(label="Krippendorff's alpha (ordinal) per item", interactive=False)
        agreement_table = gr.Dataframe(label="Agreement with LLM judges (Spearman, alpha)", interactive=False)

    def on_create(
        secret_text: str,
        query: str,
        upload: str | None,
        rubric_name: str,
        asked: list[str],
        n: float,
        k: float,
        seed_value: float,
        study_name: str,
    ) -> list[object]:
        _require_admin(secret_text)
        check_upload_size(upload, "the pairs file")
        try:
            spec = rating.StudySpec(
                name=study_name or "",
                raters=int(n or 0),
                raters_per_pair=int(k or 0) or None,
                rubric=rubric_name,
                choices=rating.StudyChoices(**{a: a in (asked or []) for a in ASKS}),
                seed=int(seed_value or 0),
            )
            resolved = rating.resolve_pairs(store, upload or query)
            made = rating.create_study(
                store, resolved.pairs, spec, source=resolved.description, uploaded=resolved.uploaded
            )
        except (ValueError, FileNotFoundError, KeyError) as exc:
            raise gr.Error(str(exc)) from exc
        codes = "\n".join(f"rater {i}: {c}" for i, c in enumerate(made.invite_codes, start=1))
        text = f"study {made.study_id}: {made.pairs} pairs, {made.assignments} assignments\n{codes}"
        listing = study_choices(store)
        return [text, gr.update(choices=listing, value=made.study_id), True, listing]

    def on_refresh(secret_text: str) -> list[object]:
        _require_admin(secret_text)
        listing = study_choices(store)
        return [gr.update(choices=listing), True, listing]

    def on_tick(allowed: bool, previous: list | None) -> list[object]:
        if not allowed:
            return [gr.skip(), gr.skip()]
        listing = study_choices(store)
        if previous is not None and [tuple(c) for c in previous] == [tuple(c) for c in listing]:
            return [gr.skip(), gr.skip()]
        return [gr.update(choices=listing), listing]

    def on_progress(secret_text: str, study_id: str | None) -> list[object]:
        _require_admin(secret_text)
        raters_frame, pairs_frame = rating.progress_tables(store, _study_id(study_id))
        return [_table(raters_frame), _table(pairs_frame)]

    def on_report(secret_text: str, study_id: str | None) -> list[object]:
        _require_admin(secret_text)
        unblinded = rating.unblinding_report(store, _study_id(study_id))
        reliable = rating.reliability(store, _study_id(study_id))
        agreement = rating.judge_agreement(store, _study_id(study_id))
        text = (
            f"**{unblinded.ratings} ratings.** Share of decided preferences for the side shown as A: "
            f"{unblinded.shown_a_rate:.2f} (0.5 = no position bias). ICC(2,1) on totals: {reliable.icc_total:.3f} "
            f"({reliable.icc_units} units x {reliable.icc_raters} raters). Preference alpha (nominal): "
            f"{reliable.preference_alpha:.3f}."
        )
        return [
            text,
            _table(unblinded.preference),
            _table(unblinded.head_to_head),
            _table(unblinded.items),
            _table(reliable.items),
            _table(agreement),
        ]

    def export(secret_text: str, study_id: str | None, fmt: rating.analysis.ExportFormat) -> str:
        _require_admin(secret_text)
        wanted = _study_id(study_id)
        path = Path(tempfile.mkdtemp(prefix="cbtcompare-rating-")) / f"ratings-{wanted[:8]}.{fmt}"
        with path.open("w", encoding="utf-8", newline="") as out:
            rating.write_export(store, wanted, out, fmt)
        return str(path)

    create.click(
        on_create,
        [secret, pairs_query, pairs_file, rubric, asks, raters, per_pair, seed, name],
        [created, study, admin_ok, listed],
        api_name="rate_admin_create",
    )
    refresh.click(on_refresh, [secret], [study, admin_ok, listed], api_name="rate_admin_studies")
    secret.submit(on_refresh, [secret], [study, admin_ok, listed], api_name=False)
    timer.tick(on_tick, [admin_ok, listed], [study, listed], queue=False, show_progress="hidden", api_name=False)
    show_progress.click(on_progress, [secret, study], [per_rater, per_pair_table], api_name="rate_admin_progress")
    show_report.click(
        on_report,
        [secret, study],
        [summary, preference_table, head_to_head, item_table, alpha_table, agreement_table],
        api_name="rate_admin_report",
    )
    export_csv.click(lambda s, i: export(s, i, "csv"), [secret, study], [export_file], api_name="rate_admin_export_csv")
    export_jsonl.click(
        lambda s, i: export(s, i, "jsonl"), [secret, study], [export_file], api_name="rate_admin_export_jsonl"
    )


def _study_id(study_id: str | None) -> str:
    if not study_id:
        raise gr.Error("Pick a study first (Load studies).")
    return study_id
