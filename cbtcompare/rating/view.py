"""HTML for the rater's screen: two transcripts side by side (scrubbed text only) and a progress bar.

Pure formatting of a PairView: every text is escaped, nothing but roles and turn texts is rendered,
and each pane carries the markers the page's read tracker needs (data-view, data-pane). This module
never imports gradio and never sees an id, a model name or any other metadata.
"""

from __future__ import annotations

import html

from cbtcompare.rating.rater import DisplayTurn, PairView, Progress

ROLE_LABELS = {"therapist": "Therapist", "patient": "Patient"}
PANE_HEIGHT_PX = 520
_PANE_STYLE = (
    f"flex:1 1 0;min-width:0;max-height:{PANE_HEIGHT_PX}px;overflow-y:auto;border:1px solid #9ca3af;"
    "border-radius:8px;padding:10px 14px;"
)
_TURN_STYLE = {
    "therapist": "margin:8px 0;padding:8px 10px;border-radius:6px;background:rgba(37,99,235,0.08);",
    "patient": "margin:8px 0;padding:8px 10px;border-radius:6px;background:rgba(107,114,128,0.10);",
}


def _turn_html(turn: DisplayTurn) -> str:
    role = ROLE_LABELS.get(turn.role, turn.role.title())
    body = html.escape(turn.text.strip()).replace("\n", "<br>")
    style = _TURN_STYLE.get(turn.role, _TURN_STYLE["patient"])
    return f'<div style="{style}"><strong>{html.escape(role)}</strong><div>{body}</div></div>'


def _pane_html(side: str, turns: list[DisplayTurn]) -> str:
    body = "".join(_turn_html(t) for t in turns) or "<p><em>(no turns)</em></p>"
    return (
        f'<section data-pane="{side.lower()}" style="{_PANE_STYLE}">'
        f'<h3 style="margin:0 0 6px 0;">Transcript {side}</h3>{body}'
        f'<p style="text-align:center;opacity:0.7;margin:10px 0 0 0;">end of transcript {side}</p></section>'
    )


def pair_html(view: PairView) -> str:
    """Both transcripts, whole, side by side; `data-view` is the token the read flag must echo."""
    token = html.escape(view.view_token)
    return (
        f'<div class="cbt-rate-pair" data-view="{token}" style="display:flex;gap:14px;align-items:stretch;">'
        f"{_pane_html('A', view.a)}{_pane_html('B', view.b)}</div>"
    )


def progress_html(status: Progress) -> str:
    total = max(status.total, 1)
    return (
        f'<div class="cbt-rate-progress"><progress value="{status.done}" max="{total}" style="width:100%;">'
        f"</progress><div>{status.done} of {status.total} pairs rated</div></div>"
    )
