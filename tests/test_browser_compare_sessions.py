"""The Compare tab in headless Chromium, written as a person's steps (issue 14's Compare findings).

Each test failed on the tab as it was: an early Stop froze the session, a reload or a settings change lost
the conversation, Download JSON needed two clicks, refusals left text-less red "Error" badges, replies cut
at the token budget looked finished, and the crisis panel vanished on the next message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fixtures_browser import needs_chromium
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.slow, pytest.mark.browser, needs_chromium]

REPLY_S = 150_000  # one reply from the default model on a loaded shared machine, in ms


def open_compare(page: Page, app_url: str) -> None:
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(app_url)
    page.get_by_text("not therapy and not a substitute for a clinician").first.wait_for()


def replies(page: Page, pane: int) -> object:
    """The pane's finished replies (each carries a techniques line)."""
    return page.locator(f"#pane-{pane}").get_by_text("techniques:")


def number_box(page: Page, label: str) -> object:
    """A parity-card number box by what a person reads: a slider's box, or a number field's label."""
    return page.locator(f"input[aria-label='number input for {label}'], input[type=number][aria-label='{label}']")


def set_number(page: Page, label: str, value: int) -> None:
    """Type a value into a parity-card slider's or number's box, as a person does, and leave the box."""
    accordion = page.get_by_text("Parity card: the same for every pane")
    box = number_box(page, label)
    if not box.is_visible():
        accordion.click()
    for _ in range(3):  # a page still applying its load event can put the old value back; type it again then
        box.fill(str(value))
        box.press("Tab")
        try:
            expect(box).to_have_value(str(value), timeout=3_000)
            return
        except AssertionError:
            continue
    expect(box).to_have_value(str(value))


def pick(page: Page, picker: int, name: str) -> None:
    page.locator(f"#compare-model-{picker} input").click()
    page.get_by_role("option", name=name, exact=True).click()


def send(page: Page, text: str) -> None:
    page.locator("#message textarea").fill(text)
    page.locator("#send").click()


def test_stop_before_the_first_token_ends_it_and_the_next_send_answers(page: Page, app_url: str) -> None:
    open_compare(page, app_url)
    pick(page, 2, "(none)")
    set_number(page, "max tokens", 64)
    send(page, "Tell me everything you know about sleep hygiene, in detail.")
    page.locator("#stop").click()  # before the first token: the models are still loading or reading
    stopped = page.locator("#compare-status").get_by_text(re.compile("Stopped"))
    stopped.wait_for(timeout=60_000)  # the tab says it stopped, instead of going quiet
    before = [replies(page, i).count() for i in (0, 1)]

    send(page, "Okay, just one tip for tonight then.")
    for i in (0, 1):
        page.locator(f"#pane-{i}").get_by_text("just one tip for tonight").first.wait_for(timeout=REPLY_S)
        expect(replies(page, i)).to_have_count(before[i] + 1, timeout=REPLY_S)
        assert "stopped" not in replies(page, i).last.inner_text()
    expect(page.locator("#compare-status")).not_to_contain_text("Stopped")


def test_the_conversation_survives_a_reload_and_a_settings_change_keeps_it_listed(page: Page, app_url: str) -> None:
    open_compare(page, app_url)
    pick(page, 2, "(none)")
    set_number(page, "max tokens", 24)
    send(page, "My exam went badly and I keep replaying it.")
    for i in (0, 1):
        expect(replies(page, i)).to_have_count(1, timeout=REPLY_S)
    expect(page.locator("#download")).to_be_enabled(timeout=60_000)  # the send has finished

    page.reload()
    page.locator("#pane-0").get_by_text("My exam went badly").first.wait_for(timeout=60_000)
    expect(replies(page, 1)).to_have_count(1)
    expect(page.locator("#pane-2")).to_be_hidden()  # two models were picked, so two panes show

    set_number(page, "seed", 7)  # a settings change: a new conversation, and the old one stays listed
    send(page, "A different worry: my flatmate is loud.")
    expect(page.locator("#compare-status")).to_contain_text("new conversation", timeout=60_000)
    expect(replies(page, 0)).to_have_count(1, timeout=REPLY_S)
    expect(page.locator("#pane-0")).not_to_contain_text("My exam went badly")
    expect(page.locator("#download")).to_be_enabled(timeout=60_000)

    page.locator("#recent-comparisons input").click()
    options = page.get_by_role("option")
    expect(options).to_have_count(2)
    page.get_by_role("option", name=re.compile("My exam went badly")).click()
    page.locator("#pane-0").get_by_text("My exam went badly").first.wait_for(timeout=REPLY_S)
    expect(page.locator("#pane-0")).not_to_contain_text("my flatmate is loud")
    expect(number_box(page, "seed")).to_have_value("0")  # its own settings come back


def test_download_json_is_one_click(page: Page, app_url: str) -> None:
    open_compare(page, app_url)
    pick(page, 2, "(none)")
    set_number(page, "max tokens", 24)
    send(page, "Hello, I would like to talk about stress.")
    for i in (0, 1):
        expect(replies(page, i)).to_have_count(1, timeout=REPLY_S)
    with page.expect_download(timeout=20_000) as download:
        page.locator("#download").click()
    transcripts = json.loads(Path(download.value.path()).read_text())
    assert [t["turns"][0]["text"] for t in transcripts] == ["Hello, I would like to talk about stress."] * 2
    assert [t["turns"][1]["role"] for t in transcripts] == ["therapist", "therapist"]


def test_a_refusal_says_why_beside_the_input_and_clears_on_the_next_action(page: Page, app_url: str) -> None:
    open_compare(page, app_url)
    message = page.locator("#message")
    expect(message).to_contain_text("4,000 characters")  # the limit is stated before sending
    page.locator("#message textarea").fill("ab  cd")
    expect(page.locator("#message-counter")).to_contain_text("6 / 4,000")

    pick(page, 2, "(none)")
    send(page, "   ")
    status = page.locator("#compare-status")
    expect(status).to_contain_text("empty", timeout=30_000)
    page.wait_for_timeout(1_500)
    for where in ("#pane-0", "#pane-1", "#message", "#compare-status"):
        expect(page.locator(where).get_by_text("Error", exact=True)).to_have_count(0)

    set_number(page, "max tokens", 16)
    send(page, "I feel tense before meetings.")
    expect(status).not_to_contain_text("empty", timeout=60_000)
    expect(replies(page, 0)).to_have_count(1, timeout=REPLY_S)


def test_compare_details_cut_replies_crisis_panel_until_dismissed_and_picked_panes(page: Page, app_url: str) -> None:
    open_compare(page, app_url)
    # three models picked by default: three panes (waits for the page to render on a busy machine)
    expect(page.locator("#pane-2")).to_be_visible(timeout=60_000)
    pick(page, 2, "(none)")
    expect(page.locator("#pane-2")).to_be_hidden(timeout=30_000)
    set_number(page, "max tokens", 16)

    send(page, "Honestly I just want to go to sleep and never wake up.")
    panel = page.locator("#crisis-panel")
    panel.wait_for(state="visible", timeout=REPLY_S)
    for i in (0, 1):
        expect(replies(page, i)).to_have_count(1, timeout=REPLY_S)
    expect(page.locator("#pane-0")).to_contain_text("16-token limit")  # 16 tokens never finish a reply

    send(page, "Thanks. I will call my sister tonight.")
    expect(replies(page, 0)).to_have_count(2, timeout=REPLY_S)
    expect(panel).to_be_visible()  # the resources stay until the person dismisses them
    assert "988" in panel.inner_text()
    page.locator("#crisis-dismiss").click()
    expect(panel).to_be_hidden()

    pick(page, 2, "smollm2-instruct")
    expect(page.locator("#pane-2")).to_be_visible(timeout=30_000)
