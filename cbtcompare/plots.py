"""Plotly figures of CTRS results: per-item bars with CIs, radar, paired slopes, totals, training loss.

Each function takes the long scores table (or a loss history) and returns a plotly Figure; the numbers
come from cbtcompare.stats, so a figure never computes a statistic of its own. Nothing here writes files,
imports gradio or reads the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from cbtcompare.stats import CTRS_ITEMS, TOTAL, AnalysisError, item_means, transcript_totals
from cbtcompare.stats.patient_level import patient_means

ITEM_LABELS: dict[str, str] = {
    "agenda": "Agenda",
    "feedback": "Feedback",
    "understanding": "Understanding",
    "interpersonal_effectiveness": "Interpersonal eff.",
    "collaboration": "Collaboration",
    "pacing": "Pacing",
    "guided_discovery": "Guided discovery",
    "key_cognitions": "Key cognitions",
    "strategy_for_change": "Strategy for change",
    "cbt_techniques": "CBT techniques",
    "homework": "Homework",
}
PALETTE: tuple[str, ...] = tuple(qualitative.Plotly)
VARIANT_ORDER: tuple[str, ...] = ("base", "prompted", "tuned")


def _colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def item_bars(scores: pd.DataFrame, confidence: float = 0.95) -> go.Figure:
    """Grouped bars: the mean of each CTRS item per therapist model, with t-based CI error bars."""
    means = item_means(scores, confidence)
    means = means[means["measure"] != TOTAL]
    therapists = sorted(means["therapist"].unique())
    colours = _colours(therapists)
    figure = go.Figure()
    for therapist in therapists:
        rows = means[means["therapist"] == therapist].set_index("measure").reindex(list(CTRS_ITEMS))
        figure.add_trace(
            go.Bar(
                name=therapist,
                x=[ITEM_LABELS[item] for item in CTRS_ITEMS],
                y=rows["mean"].tolist(),
                marker_color=colours[therapist],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (rows["ci_high"] - rows["mean"]).tolist(),
                    "arrayminus": (rows["mean"] - rows["ci_low"]).tolist(),
                },
                customdata=rows[["n", "ci_low", "ci_high"]].to_numpy(),
                hovertemplate="%{x}: %{y:.2f} [%{customdata[1]:.2f}, %{customdata[2]:.2f}], n=%{customdata[0]}"
                "<extra>%{fullData.name}</extra>",
            )
        )
    figure.update_layout(
        title=f"CTRS item means per model ({confidence:.0%} CI)",
        barmode="group",
        yaxis_title="Mean item score",
        legend_title="Therapist model",
    )
    return figure


def radar(scores: pd.DataFrame) -> go.Figure:
    """One closed polygon per therapist model over the 11 item means."""
    means = item_means(scores)
    means = means[means["measure"] != TOTAL]
    therapists = sorted(means["therapist"].unique())
    colours = _colours(therapists)
    labels = [ITEM_LABELS[item] for item in CTRS_ITEMS]
    figure = go.Figure()
    for therapist in therapists:
        values = means[means["therapist"] == therapist].set_index("measure").reindex(list(CTRS_ITEMS))["mean"]
        figure.add_trace(
            go.Scatterpolar(
                name=therapist,
                r=[*values.tolist(), values.iloc[0]],
                theta=[*labels, labels[0]],
                line_color=colours[therapist],
                fill="toself",
                opacity=0.6,
            )
        )
    figure.update_layout(title="CTRS item profile per model", polar={"radialaxis": {"rangemode": "tozero"}})
    return figure


def paired_slopes(
    scores: pd.DataFrame,
    *,
    control: str = "base",
    treatment: str = "tuned",
    pairs: Sequence[tuple[str, str]] | None = None,
) -> go.Figure:
    """One panel per therapist pair (cbtcompare.stats.resolve_pairing): a line per patient from its mean
    total under the control therapist to the treatment therapist over the matched sessions (the units
    of the primary, patient-level analysis), and the pair's mean in bold."""
    try:
        control_means, treatment_means = patient_means(
            scores, treatment=treatment, control=control, pairs=pairs, by="pair"
        )
    except AnalysisError as exc:
        raise ValueError(str(exc)) from exc
    per_patient = pd.DataFrame({control: control_means[TOTAL], treatment: treatment_means[TOTAL]}).dropna()
    if per_patient.empty:
        raise ValueError(f"no patient has both '{control}' and '{treatment}' totals in a therapist pair")
    labels = sorted(per_patient.index.get_level_values("pair").unique())
    figure = make_subplots(rows=1, cols=len(labels), shared_yaxes=True, subplot_titles=labels)
    for column, label in enumerate(labels, start=1):
        block = per_patient.loc[label]
        for patient_id, row in block.iterrows():
            figure.add_trace(
                go.Scatter(
                    x=[control, treatment],
                    y=[row[control], row[treatment]],
                    mode="lines+markers",
                    line={"color": "rgba(120,120,120,0.45)", "width": 1},
                    marker={"size": 5},
                    name=str(patient_id),
                    showlegend=False,
                    hovertemplate=f"patient {patient_id}: %{{y:.1f}}<extra>{label}</extra>",
                ),
                row=1,
                col=column,
            )
        figure.add_trace(
            go.Scatter(
                x=[control, treatment],
                y=[block[control].mean(), block[treatment].mean()],
                mode="lines+markers",
                line={"color": PALETTE[0], "width": 4},
                name="pair mean",
                showlegend=column == 1,
            ),
            row=1,
            col=column,
        )
    figure.update_layout(title=f"Total CTRS per patient, {control} -> {treatment}", yaxis_title="Mean total")
    return figure


def arena_ratings(
    ratings: pd.DataFrame, title: str = "Arena leaderboard (Bradley-Terry, 95% bootstrap CI)"
) -> go.Figure:
    """Ratings with their CIs as horizontal error bars, best on top (the frame of arena.Leaderboard.frame)."""
    ordered = ratings.sort_values("rating")
    figure = go.Figure(
        go.Scatter(
            x=ordered["rating"],
            y=ordered["model"],
            mode="markers",
            marker={"size": 10, "color": PALETTE[0]},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": (ordered["ci_high"] - ordered["rating"]).tolist(),
                "arrayminus": (ordered["rating"] - ordered["ci_low"]).tolist(),
            },
            text=[f"n = {n}" for n in ordered["n"]],
            hovertemplate="%{y}: %{x:.0f} (%{text})<extra></extra>",
        )
    )
    figure.update_layout(title=title, xaxis_title="Rating (Elo scale)")
    return figure


def totals_distribution(scores: pd.DataFrame) -> go.Figure:
    """Box plots (with every transcript as a point) of the CTRS total per therapist model; partial totals
    are marked again with a black cross in a trace of their own."""
    totals = transcript_totals(scores).dropna(subset=[TOTAL])
    therapists = sorted(totals["therapist"].unique())
    colours = _colours(therapists)
    figure = go.Figure()
    for therapist in therapists:
        rows = totals[totals["therapist"] == therapist]
        figure.add_trace(
            go.Box(
                name=therapist,
                x=[therapist] * len(rows),
                y=rows[TOTAL].tolist(),
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker_color=colours[therapist],
                text=rows["transcript_id"].tolist(),
                hovertemplate="%{text}: %{y}<extra>%{fullData.name}</extra>",
                showlegend=False,
            )
        )
    partial = totals[totals["partial"]]
    if not partial.empty:
        figure.add_trace(
            go.Scatter(
                name="partial total",
                x=partial["therapist"].tolist(),
                y=partial[TOTAL].tolist(),
                mode="markers",
                marker={"symbol": "x", "color": "black", "size": 9},
                text=partial["transcript_id"].tolist(),
                hovertemplate="%{text}: %{y} (partial)<extra></extra>",
            )
        )
    figure.update_layout(title="Distribution of CTRS totals", yaxis_title="Total")
    return figure


def loss_curve(history: Sequence[Mapping[str, float]], title: str = "Training loss") -> go.Figure:
    """Loss against step from a training log: records of {step, loss} (a record may instead or also carry
    eval_loss, as a trainer's log history does)."""
    if not history:
        raise ValueError("the loss history is empty")
    series: dict[str, list[tuple[float, float]]] = {"loss": [], "eval_loss": []}
    for index, record in enumerate(history):
        if not isinstance(record, Mapping) or "step" not in record:
            raise ValueError(f"loss history record {index} has no 'step': {record!r}")
        found = [key for key in series if record.get(key) is not None]
        if not found:
            raise ValueError(f"loss history record {index} has neither 'loss' nor 'eval_loss': {record!r}")
        for key in found:
            try:
                series[key].append((float(record["step"]), float(record[key])))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"loss history record {index} is not numeric: {record!r}") from exc
    figure = go.Figure()
    for key, points in series.items():
        if points:
            points.sort()
            figure.add_trace(
                go.Scatter(
                    x=[step for step, _ in points],
                    y=[value for _, value in points],
                    mode="lines+markers" if key == "eval_loss" else "lines",
                    name="training loss" if key == "loss" else "evaluation loss",
                )
            )
    figure.update_layout(title=title, xaxis_title="Step", yaxis_title="Loss")
    return figure
