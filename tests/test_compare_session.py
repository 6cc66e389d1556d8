"""CompareSession in-process on the real default models: parity, seeds, regenerate, stop, clear, safety."""

from __future__ import annotations

import pytest

from cbtcompare.compare import CompareSession
from cbtcompare.models.base import Sampling

PAIR = ["smollm2-instruct", "smollm2-cbt-prompted"]
SHORT = Sampling(temperature=0.8, max_tokens=20)


def run(updates) -> None:
    for _ in updates:
        pass


def test_every_pane_gets_the_same_settings_and_seed_schedule(registry):
    session = CompareSession(registry, PAIR, session_prompt="Be brief.", sampling=SHORT, seed=4)
    run(session.send("I can't focus at work."))
    replies = [pane.transcript.turns[-1] for pane in session.panes]
    assert all(r.role == "therapist" and r.text for r in replies)
    assert replies[0].seed == replies[1].seed
    assert [p.transcript.sampling for p in session.panes][0] == [p.transcript.sampling for p in session.panes][1]
    assert session.panes[0].system_prompt.text == "Be brief."
    assert session.panes[1].system_prompt.source == "model"
    versions = session.panes[0].transcript.prompt_versions
    assert versions["system"].startswith("session@") and "safety_rules" in versions and "technique_rules" in versions
    assert all("techniques" in r.flags for r in replies)


def test_regenerate_replaces_the_last_reply_reproducibly(registry):
    def regenerated(seed: int) -> tuple[str, str]:
        session = CompareSession(registry, PAIR[:1], sampling=SHORT, seed=seed)
        run(session.send("I keep procrastinating."))
        first = session.panes[0].transcript.turns[-1]
        run(session.regenerate())
        turns = session.panes[0].transcript.turns
        assert [t.role for t in turns] == ["patient", "therapist"]
        assert turns[-1].seed != first.seed
        return first.text, turns[-1].text

    assert regenerated(5) == regenerated(5)


def test_regenerate_before_any_message_is_refused(registry):
    session = CompareSession(registry, PAIR[:1], sampling=SHORT)
    with pytest.raises(ValueError, match="send a message first"):
        run(session.regenerate())


def test_stop_keeps_the_partial_reply_marked_stopped(registry):
    session = CompareSession(registry, PAIR[:1], sampling=Sampling(max_tokens=200, seed=1))
    updates = session.send("Tell me everything about sleep hygiene.")
    for panes in updates:
        if len(panes[0].partial) > 5:
            session.stop()
    reply = session.panes[0].transcript.turns[-1]
    assert reply.flags.get("stopped") is True
    assert 0 < reply.tokens < 200


def test_clear_starts_a_new_comparison(registry):
    session = CompareSession(registry, PAIR, sampling=SHORT)
    run(session.send("Hello."))
    old_group = session.group_id
    session.clear()
    assert session.group_id != old_group and all(not p.transcript.turns for p in session.panes)


def test_crisis_is_flagged_and_cleared_on_the_next_message(registry):
    session = CompareSession(registry, PAIR[:1], sampling=SHORT)
    run(session.send("I have a plan to kill myself tonight."))
    assert session.crisis and "intent_or_plan" in session.crisis.categories
    assert session.panes[0].transcript.turns[0].flags["crisis"]
    run(session.send("Okay. I will call someone."))
    assert session.crisis is None


def test_bad_messages_and_too_many_panes_are_refused(registry):
    with pytest.raises(ValueError, match="between 1 and 3"):
        CompareSession(registry, PAIR * 2)
    session = CompareSession(registry, PAIR[:1], sampling=SHORT)
    with pytest.raises(ValueError, match="empty"):
        run(session.send("  \n"))
    with pytest.raises(ValueError, match="limit is 4,000"):
        run(session.send("a" * 20_000))
    assert session.panes[0].transcript.turns == []
