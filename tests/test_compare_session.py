"""CompareSession in-process on the real default models: parity, seeds, regenerate, stop, clear, safety."""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbtcompare.compare import CompareSession, ComparisonHistory, SavedComparison, history_from_browser
from cbtcompare.models.base import Sampling
from cbtcompare.transcript import Transcript, Turn

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


# Issue 12 (provenance, one sampling rule) and issue 14 (stop, cut replies, conversations kept) -------------


def test_a_compare_transcript_says_what_its_model_is_as_a_simulated_one_does(registry):
    from cbtcompare.provenance import describe, of_record

    session = CompareSession(registry, ["smollm2-instruct", "smollm2-cbt-prompted", "smollm2-cbt"], sampling=SHORT)
    classified = [of_record(p.transcript.therapist, p.transcript.meta) for p in session.panes]
    assert classified == [("base", "smollm2"), ("prompted", "smollm2"), ("tuned", "smollm2")]
    for pane in session.panes:
        expected = describe(registry.spec(pane.name))
        assert (pane.transcript.meta["variant"], pane.transcript.meta["family"]) == (expected.variant, expected.family)


def test_compare_and_pair_resolve_the_same_sampling_for_the_same_spec(registry):
    from cbtcompare.simulate.settings import shared_sampling

    spec = registry.spec(PAIR[0])
    tab_choice = Sampling(temperature=0.7, top_p=0.95, max_tokens=24)  # what the Compare tab's sliders build
    pair_choice = spec.sampling.merged(max_tokens=24, temperature=0.7)  # what `pair --max-tokens 24` builds
    compared = CompareSession(registry, PAIR, sampling=tab_choice).sampling
    paired = CompareSession(registry, PAIR, sampling=pair_choice).sampling
    assert compared == paired == shared_sampling([spec, registry.spec(PAIR[1])], {"temperature": 0.7, "max_tokens": 24})
    assert compared.repeat_penalty == spec.sampling.repeat_penalty != Sampling().repeat_penalty
    assert CompareSession(registry, PAIR).sampling == spec.sampling  # no overrides: the spec's own


def test_stop_before_the_first_token_ends_the_reply_and_the_next_message_answers(registry):
    session = CompareSession(registry, PAIR, sampling=Sampling(max_tokens=200, seed=1))
    updates = session.send("Tell me everything about sleep hygiene.")
    next(updates)  # the workers have started; no token has come yet
    session.stop()
    run(updates)
    first = [p.transcript.turns[-1] for p in session.panes]
    assert all(r.role == "therapist" and r.flags.get("stopped") for r in first)
    assert all(r.tokens <= 2 for r in first)  # at most the token in flight when Stop came
    run(session.send("Okay, one tip then."))
    second = [p.transcript.turns[-1] for p in session.panes]
    assert all(r.role == "therapist" and r.text and not r.flags.get("stopped") for r in second)
    assert [t.role for t in session.panes[0].transcript.turns] == ["patient", "therapist"] * 2


def test_screening_waits_for_the_first_token_so_it_never_shares_the_cores_with_prompt_processing(registry):
    session = CompareSession(registry, PAIR, sampling=Sampling(max_tokens=12, seed=3))
    screen = session._screen_person_turn
    seen_at_start: list[bool] = []

    def recording(message: str, position: int) -> None:
        seen_at_start.append(any(p.partial for p in session.panes) or not any(p.streaming for p in session.panes))
        screen(message, position)

    session._screen_person_turn = recording
    run(session.send("I have a plan to kill myself tonight."))
    assert seen_at_start == [True]  # started once, after a pane's first token (or the end)
    assert session.crisis and session.panes[0].transcript.turns[0].flags["crisis"]


def test_a_turn_closed_before_its_first_token_is_still_screened(registry):
    session = CompareSession(registry, PAIR[:1], sampling=Sampling(max_tokens=200, seed=1))
    updates = session.send("I have a plan to kill myself tonight.")
    next(updates)  # the workers have started; no token has come yet
    updates.close()  # a browser gone, an event cancelled
    assert session.panes[0].transcript.turns[0].flags["crisis"]
    assert session.crisis and "intent_or_plan" in session.crisis.categories


def test_a_reply_cut_at_max_tokens_is_marked_and_a_finished_one_is_not(registry):
    session = CompareSession(registry, PAIR[:1], sampling=Sampling(max_tokens=8, seed=2))
    run(session.send("Explain in detail how cognitive restructuring works."))
    cut = session.panes[0].transcript.turns[-1]
    assert cut.flags.get("cut_at_max_tokens") == 8 and cut.tokens == 8
    roomy = CompareSession(registry, PAIR[:1], sampling=Sampling(max_tokens=600, seed=2))
    run(roomy.send("Say hi."))
    finished = roomy.panes[0].transcript.turns[-1]
    assert finished.tokens < 600 and "cut_at_max_tokens" not in finished.flags


def test_a_saved_conversation_resumes_with_its_turns_settings_and_seed_schedule(registry):
    session = CompareSession(registry, PAIR, session_prompt="Be brief.", sampling=SHORT, seed=9)
    run(session.send("I can't sleep."))
    history = ComparisonHistory().remember(session.snapshot())
    kept, problem = history_from_browser(json.loads(json.dumps(history.model_dump(mode="json"))))
    assert problem is None and kept.current == session.group_id
    resumed = CompareSession.resume(registry, kept.find(session.group_id))
    assert resumed.settings == session.settings and resumed.group_id == session.group_id
    assert [p.transcript.model_dump() for p in resumed.panes] == [p.transcript.model_dump() for p in session.panes]
    run(resumed.send("Still awake."))
    run(session.send("Still awake."))
    assert [p.transcript.turns[-1].text for p in resumed.panes] == [p.transcript.turns[-1].text for p in session.panes]


def test_recent_comparisons_newest_first_capped_and_empty_ones_unlisted():
    from cbtcompare.compare import MAX_RECENT_COMPARISONS

    history = ComparisonHistory()
    for n in range(MAX_RECENT_COMPARISONS + 3):
        history = history.remember(saved_with(f"g{n}", [f"message {n}"]))
    assert [c.group_id for c in history.recent] == [f"g{n}" for n in range(MAX_RECENT_COMPARISONS + 2, 2, -1)]
    history = history.remember(saved_with("g5", ["message 5", "more"]))
    assert history.recent[0].group_id == "g5" and len({c.group_id for c in history.recent}) == len(history.recent)
    assert "2 msg" in history.choices()[0][0]
    assert history.remember(saved_with("empty", [])).find("empty") is None


# Data from a browser: whatever comes back is a history or a reason, never a crash ------------------------


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def saved_with(group_id: str, messages: list[str]) -> SavedComparison:
    transcript = Transcript(group_id=group_id, turns=[Turn(role="patient", text=m) for m in messages])
    return SavedComparison(
        group_id=group_id, settings={"models": ["smollm2-instruct", "smollm2-cbt-prompted"]}, transcripts=[transcript]
    )


@settings(max_examples=150, deadline=None)
@given(raw=JSON | st.fixed_dictionaries({"current": st.text(max_size=70), "recent": st.lists(JSON, max_size=3)}))
def test_anything_a_browser_sends_back_is_a_history_or_a_reason(raw):
    history, problem = history_from_browser(raw)
    assert isinstance(history, ComparisonHistory)
    if problem is not None:
        assert history.recent == [] and "comparisons kept in this browser" in problem


@settings(max_examples=80, deadline=None)
@given(messages=st.lists(st.text(min_size=1, max_size=4000), min_size=1, max_size=4))
def test_any_conversation_text_round_trips_through_the_browser_and_labels_on_one_line(messages):
    history = ComparisonHistory().remember(saved_with("g", messages))
    kept, problem = history_from_browser(json.loads(json.dumps(history.model_dump(mode="json"))))
    assert problem is None
    assert [t.text for t in kept.find("g").transcripts[0].turns] == messages
    label = kept.choices()[0][0]
    assert "\n" not in label and len(label) < 200


# Issue 15: what the tab needs before a first token, and a reopened conversation's crisis panel ---------------


def test_a_panes_first_token_is_yielded_at_once_and_the_rest_wait_for_the_interval(registry):
    """With an interval longer than any reply, a pane's first token and its end still come at once (the tab
    showed the first token only after UPDATE_INTERVAL_S had passed since its last update, when the next
    chunk came); the chunks between them are held back, so the updates are few."""
    session = CompareSession(registry, PAIR, sampling=Sampling(max_tokens=24, seed=3), update_every_s=3600)
    seen = [[(p.partial, p.streaming, len(p.transcript.turns)) for p in panes] for panes in session.send("Hi.")]
    for index in range(len(PAIR)):
        live = [view[index] for view in seen if view[index][1]]
        assert any(partial for partial, _, _ in live), f"pane {index}'s text was never shown while it streamed"
        first_shown = next(partial for partial, _, _ in live if partial)
        reply = session.panes[index].transcript.turns[-1]
        assert reply.tokens > 2 and len(first_shown) < len(reply.text)  # the first token, not the whole reply
    assert len(seen) <= 2 + 2 * len(PAIR) + 1  # started, a first token and an end per pane, the screening's
    assert [p.transcript.turns[-1].role for p in session.panes] == ["therapist"] * len(PAIR)


def test_a_session_yields_every_chunk_without_an_interval(registry):
    session = CompareSession(registry, PAIR[:1], sampling=Sampling(max_tokens=24, seed=3))
    partials = [panes[0].partial for panes in session.send("Hi.") if panes[0].streaming]
    assert len(set(partials)) > 3  # the reply grew update by update


def test_a_reopened_conversation_brings_back_its_crisis_finding(registry):
    """Issue 15: a conversation reopened after a reload showed no crisis panel although a turn was flagged."""
    session = CompareSession(registry, PAIR[:1], sampling=SHORT)
    run(session.send("I have a plan to kill myself tonight."))
    run(session.send("Okay. I will call someone."))
    assert session.crisis is None  # the newest message is calm; the tab still shows the panel until dismissed
    saved = SavedComparison.model_validate(json.loads(session.snapshot().model_dump_json()))
    resumed = CompareSession.resume(registry, saved)
    assert resumed.crisis and "intent_or_plan" in resumed.crisis.categories
    calm = CompareSession(registry, PAIR[:1], sampling=SHORT)
    run(calm.send("I slept well."))
    assert CompareSession.resume(registry, calm.snapshot()).crisis is None


def test_a_reopened_conversation_in_an_unscreened_language_still_shows_the_resources():
    from cbtcompare.compare import newest_crisis
    from cbtcompare.safety import crisis_panel_markdown

    transcript = Transcript(
        group_id="g",
        turns=[
            Turn(
                role="patient",
                text="Ik voel me vandaag erg somber.",
                flags={"crisis_screened": False, "crisis_language": "nl"},
            ),
            Turn(role="therapist", text="Tell me more."),
            Turn(role="patient", text="Okay."),
        ],
    )
    found = newest_crisis(transcript)
    assert found is not None and not found.screened and found.language == "nl"
    assert "findahelpline.com" in crisis_panel_markdown(found)


def test_screening_starts_only_once_the_consumer_has_taken_the_first_text(registry):
    """The UI shows the first text (Gradio postprocesses it and sends it) before it asks for more; screening
    that started with that text took the cores from showing it (126 ms of encoder CPU in the first-token path)."""
    session = CompareSession(registry, PAIR, sampling=Sampling(max_tokens=12, seed=3))
    screen = session._screen_person_turn
    taken = threading.Event()
    taken_when_started: list[bool] = []

    def recording(message: str, position: int) -> None:
        taken_when_started.append(taken.is_set())
        screen(message, position)

    session._screen_person_turn = recording
    updates = session.send("I have a plan to kill myself tonight.")
    next(updates)  # the workers have started
    for i, _panes in enumerate(updates):
        if i == 0:
            time.sleep(0.2)  # the consumer showing the first text
            taken.set()
    assert taken_when_started == [True]
    assert session.crisis and session.panes[0].transcript.turns[0].flags["crisis"]


def test_side_by_side_panes_divide_the_cores_from_the_first_one_on(registry, monkeypatch):
    """Each pane's llama.cpp stream sets its threads when it starts: the first used to see itself alone and take
    every core for its prompt, and the second joined it on cores already taken (3 compute threads on 2 cores
    here, stalling each other at every barrier). Both now count the two panes the session starts."""
    import cbtcompare.models.llamacpp_pool as pool

    counted: list[int] = []
    original = pool.thread_split

    def recording(active_streams: int, cores: int | None = None) -> tuple[int, int]:
        counted.append(active_streams)
        return original(active_streams, cores)

    monkeypatch.setattr(pool, "thread_split", recording)
    session = CompareSession(registry, PAIR, sampling=Sampling(temperature=0.8, max_tokens=2), seed=1)
    run(session.send("I feel tense before meetings."))
    assert len(counted) == 2 and min(counted) == 2, counted
    counted.clear()
    alone = CompareSession(registry, PAIR[:1], sampling=Sampling(temperature=0.8, max_tokens=2), seed=1)
    run(alone.send("I feel tense before meetings."))
    assert counted == [1]  # a lone pane still takes every core
