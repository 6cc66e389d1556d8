"""Pure formatting of a compare pane for Gradio widgets: chat messages, a header and a stats line."""

from __future__ import annotations

from cbtcompare.compare import Pane
from cbtcompare.techniques import technique_catalogue


def technique_label(tag_id: str) -> str:
    return next((t.label for t in technique_catalogue() if t.id == tag_id), tag_id)


def pane_header(pane: Pane) -> str:
    source = {
        "model": "its own system prompt",
        "session": "the parity-card system prompt",
        "none": "no system prompt",
    }[pane.system_prompt.source]
    return f"**{pane.name}** · {source}"


def pane_messages(pane: Pane) -> list[dict[str, str]]:
    messages = []
    for turn in pane.transcript.turns:
        if turn.role == "patient":
            messages.append({"role": "user", "content": turn.text})
            continue
        content = turn.text or "*(empty reply)*"
        notes = []
        tags = turn.flags.get("techniques") or []
        if tags:
            notes.append("techniques: " + ", ".join(technique_label(t) for t in tags))
        else:
            notes.append("techniques: none detected")
        if turn.flags.get("harmful_reply"):
            notes.append("FLAGGED: this reply may encourage harm")
        if turn.flags.get("stopped"):
            notes.append("stopped")
        if turn.flags.get("cut_at_max_tokens"):
            notes.append(f"cut off at the {turn.flags['cut_at_max_tokens']}-token limit (raise max tokens)")
        content += "\n\n<small>" + " · ".join(notes) + "</small>"
        messages.append({"role": "assistant", "content": content})
    if pane.streaming and pane.partial:
        messages.append({"role": "assistant", "content": pane.partial})
    if pane.error:
        messages.append({"role": "assistant", "content": f"⚠ **This model failed:** {pane.error}"})
    return messages


def pane_stats(pane: Pane) -> str:
    usage = pane.last_usage
    if pane.error and pane.model is None:
        return "unavailable"
    if usage is None:
        return f"context: 0 / {pane.context_size or '?'} tokens"
    speed = f"{usage.tokens_per_second:.1f} tokens/s" if usage.tokens_per_second else "- tokens/s"
    used, size = pane.context_used(), pane.context_size
    context = f"context: {used} / {size} tokens ({100 * used / size:.0f}%)" if used and size else "context: ?"
    trimmed = f" · trimmed {usage.trimmed_messages} old messages" if usage.trimmed_messages else ""
    return f"{usage.completion_tokens} tokens · {speed} · {context}{trimmed}"
