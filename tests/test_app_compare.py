"""The Compare tab end to end through the official gradio_client, against the real running app."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow

SETTINGS = {"system_prompt": None, "temperature": 0.7, "top_p": 0.95, "max_tokens": 24, "seed": 3}


def send(client: Client, message: str, models: tuple[str, str, str], **overrides) -> tuple:
    settings = {**SETTINGS, **overrides}
    return client.predict(
        message,
        *models,
        settings["system_prompt"] or PROMPT,
        settings["temperature"],
        settings["top_p"],
        settings["max_tokens"],
        settings["seed"],
        api_name="/send",
    )


PROMPT = "You are a supportive therapist. Keep replies short."
PAIR = ("smollm2-instruct", "smollm2-cbt-prompted", "(none)")


def unpack(result: tuple) -> dict:
    _message, crisis, *panes = result
    headers, chats, stats = panes[0:3], panes[3:6], panes[6:9]
    return {"crisis": crisis, "headers": headers, "chats": chats, "stats": stats, "status": panes[9]}


def text_of(message: dict) -> str:
    """A chat message's text: Gradio 6 returns content as a list of typed parts."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def crisis_text(update: object) -> str:
    return update.get("value") or "" if isinstance(update, dict) else str(update or "")


def test_two_panes_answer_with_techniques_and_stats(app_url):
    client = Client(app_url, verbose=False)
    view = unpack(send(client, "I failed my exam and I feel useless.", PAIR))
    for chat in view["chats"][:2]:
        assert [m["role"] for m in chat] == ["user", "assistant"]
        assert text_of(chat[0]) == "I failed my exam and I feel useless."
        assert "techniques:" in text_of(chat[1])
    assert "tokens/s" in view["stats"][0] and "context:" in view["stats"][0]
    assert "own system prompt" in view["headers"][1] and "parity-card" in view["headers"][0]
    assert view["chats"][2] == []
    second = unpack(send(client, "Why do I always mess up?", PAIR))
    assert [m["role"] for m in second["chats"][0]] == ["user", "assistant", "user", "assistant"]


def test_same_seed_gives_the_same_replies_in_a_new_session(app_url):
    first = unpack(send(Client(app_url, verbose=False), "Work is stressing me out.", PAIR, seed=11))
    second = unpack(send(Client(app_url, verbose=False), "Work is stressing me out.", PAIR, seed=11))
    assert first["chats"][:2] == second["chats"][:2]


def test_two_clients_at_once_never_see_each_others_sessions(app_url):
    results: dict[str, dict] = {}

    def talk(label: str) -> None:
        client = Client(app_url, verbose=False)
        send(client, f"My name is {label} and I feel tired.", PAIR)
        results[label] = unpack(send(client, f"{label} again: still tired.", PAIR))

    threads = [threading.Thread(target=talk, args=(label,)) for label in ("Alice", "Bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for me, other in (("Alice", "Bob"), ("Bob", "Alice")):
        user_turns = [text_of(m) for m in results[me]["chats"][0] if m["role"] == "user"]
        assert len(user_turns) == 2 and all(me in t for t in user_turns)
        assert not any(other in text_of(m) for chat in results[me]["chats"] for m in chat)


def test_crisis_message_shows_the_resources_panel_and_flags_the_turn(app_url, app_data_dir):
    client = Client(app_url, verbose=False)
    view = unpack(send(client, "I don't want to be alive anymore, I've been thinking of ending it.", PAIR))
    assert "988" in crisis_text(view["crisis"]) and "findahelpline.com" in crisis_text(view["crisis"])
    group_id, saved_note = client.predict(api_name="/save")
    assert f"comparison {group_id[:8]}" in saved_note
    from cbtcompare.store import Store

    store = Store(f"sqlite:///{app_data_dir / 'cbtcompare.sqlite'}")
    saved = [store.get_transcript(s.id) for s in store.list_transcripts(group_id=group_id)]
    assert len(saved) == 2
    assert all(t.turns[0].flags.get("crisis") for t in saved)
    assert all(t.therapist.get("weights_sha256") for t in saved)
    # Issue 14 changed this on purpose: the resources stay on the next message until the person dismisses them.
    calm = unpack(send(client, "Thanks, I feel a bit calmer now.", PAIR))
    assert "988" in crisis_text(calm["crisis"])
    dismissed = client.predict(api_name="/dismiss_crisis")
    assert crisis_text(dismissed[0] if isinstance(dismissed, tuple) else dismissed) == ""
    calmer = unpack(send(client, "Still calm.", PAIR))
    assert crisis_text(calmer["crisis"]) == ""


def test_download_gives_the_transcripts_as_json(app_url):
    client = Client(app_url, verbose=False)
    send(client, "Hello.", PAIR)
    path = Path(client.predict(api_name="/download"))
    transcripts = json.loads(path.read_text())
    assert [t["therapist"]["name"] for t in transcripts] == list(PAIR[:2])
    assert all(t["sampling"]["max_tokens"] == SETTINGS["max_tokens"] and t["seed"] == 3 for t in transcripts)
    assert all(t["prompt_versions"]["system"] != "none" for t in transcripts)


def test_the_tab_samples_a_spec_as_pair_does_and_records_what_each_model_is(app_url):
    """Issue 12: the tab sampled with the pydantic default repeat_penalty 1.0, `pair` with the spec's 1.1;
    its transcripts of smollm2-cbt-prompted were variant base, family SmolLM2-135M-Instruct.Q4_1."""
    from cbtcompare.models.base import Sampling
    from cbtcompare.models.registry import Registry
    from cbtcompare.provenance import of_record
    from cbtcompare.simulate.settings import shared_sampling

    client = Client(app_url, verbose=False)
    send(client, "Hello.", PAIR)
    transcripts = json.loads(Path(client.predict(api_name="/download")).read_text())
    registry = Registry.from_files()
    chosen = {"temperature": SETTINGS["temperature"], "top_p": SETTINGS["top_p"], "max_tokens": SETTINGS["max_tokens"]}
    expected = shared_sampling([registry.spec(n) for n in PAIR[:2]], chosen).model_dump(mode="json")
    assert [t["sampling"] for t in transcripts] == [expected, expected]
    assert expected["repeat_penalty"] == registry.spec(PAIR[0]).sampling.repeat_penalty != Sampling().repeat_penalty
    assert [of_record(t["therapist"], t["meta"]) for t in transcripts] == [("base", "smollm2"), ("prompted", "smollm2")]


def test_empty_and_oversized_messages_are_refused_with_a_reason(app_url):
    # Issue 14: the reason is the status line beside the input (an error toast left blank red badges behind).
    client = Client(app_url, verbose=False)
    empty = unpack(send(client, "   ", PAIR))
    assert "empty" in empty["status"]
    oversized = unpack(send(client, "x" * 20_000, PAIR))
    assert "limit is 4,000" in oversized["status"]
    assert client.predict(api_name="/save")[1].startswith("⚠ Nothing to save yet")  # no turn was added


def test_a_pane_that_fails_mid_stream_says_why_and_the_others_finish(app_url):
    client = Client(app_url, verbose=False)
    view = unpack(send(client, "I feel anxious.", ("smollm2-instruct", "flaky-endpoint", "dead-endpoint")))
    ok, flaky, dead = view["chats"]
    assert ok[-1]["role"] == "assistant" and "This model failed" not in text_of(ok[-1])
    assert "This model failed" in text_of(flaky[-1])
    assert "This model failed" in text_of(dead[-1]) and "127.0.0.1:9" in text_of(dead[-1])


def test_an_unavailable_model_is_shown_as_such(app_url):
    client = Client(app_url, verbose=False)
    view = unpack(send(client, "Hi.", ("smollm2-instruct", "missing-adapter", "(none)")))
    assert "adapter not built yet" in text_of(view["chats"][1][-1])
    assert view["stats"][1] == "unavailable"
    assert view["chats"][0][-1]["role"] == "assistant"
