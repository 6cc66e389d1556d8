"""The admin gate: who may change shared state. Constant-time secret check, a minimum length, a public
demo switch that refuses everything, and lockouts after repeated wrong secrets (per client and overall)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbtcompare import access, rating
from cbtcompare.access import (
    ADMIN_SECRET_ENV,
    MIN_SECRET_LENGTH,
    PUBLIC_DEMO_ENV,
    AdminGate,
    AdminLockedOut,
    AdminRefused,
    AttemptLimits,
)

SECRET = "a-long-enough-admin-secret-42"


class Clock:
    """Seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secret(monkeypatch) -> str:
    monkeypatch.setenv(ADMIN_SECRET_ENV, SECRET)
    monkeypatch.delenv(PUBLIC_DEMO_ENV, raising=False)
    return SECRET


def gate(clock: Clock, **limits: float) -> AdminGate:
    return AdminGate(AttemptLimits(**{"per_client": 3, "overall": 5, "window_s": 60, "lockout_s": 120, **limits}),
                     clock)


def test_unset_secret_disables_the_admin_area(monkeypatch):
    monkeypatch.delenv(ADMIN_SECRET_ENV, raising=False)
    with pytest.raises(AdminRefused, match=f"disabled: set {ADMIN_SECRET_ENV}"):
        AdminGate().require("anything")
    assert not access.admin_enabled()


def test_short_secret_is_refused_saying_the_minimum(monkeypatch):
    short = "x" * (MIN_SECRET_LENGTH - 1)
    monkeypatch.setenv(ADMIN_SECRET_ENV, short)
    with pytest.raises(AdminRefused, match=f"must be at least {MIN_SECRET_LENGTH}") as refused:
        AdminGate().require(short)  # even the (short) secret itself does not open it
    assert short not in str(refused.value)
    assert not access.admin_enabled()


def test_public_demo_refuses_even_the_right_secret(secret, monkeypatch):
    monkeypatch.setenv(PUBLIC_DEMO_ENV, "1")
    with pytest.raises(AdminRefused, match="public demo"):
        AdminGate().require(secret)


def test_right_secret_passes_and_wrong_ones_are_refused_without_echo(secret):
    checker = AdminGate()
    checker.require(secret)
    checker.require(f"  {secret}\n")  # pasted with whitespace
    for wrong in (None, "", "   ", secret[:-1], secret + "x", secret.upper()):
        with pytest.raises(AdminRefused, match="Wrong admin secret") as refused:
            checker.require(wrong)
        assert secret not in str(refused.value)


def test_lockout_per_client_then_expiry(secret):
    clock = Clock()
    checker = gate(clock)
    for left in (2, 1):
        with pytest.raises(AdminRefused, match=f"{left} more wrong tries"):
            checker.require("wrong", "10.0.0.1")
    with pytest.raises(AdminLockedOut, match="from this client.*try again in 120 s") as locked:
        checker.require("wrong", "10.0.0.1")
    assert locked.value.retry_after_s == 120
    clock.now += 100
    with pytest.raises(AdminLockedOut, match="try again in 20 s"):
        checker.require(secret, "10.0.0.1")  # the right secret waits out the lockout too
    checker.require(secret, "10.0.0.2")  # another client is not locked
    clock.now += 21
    checker.require(secret, "10.0.0.1")


def test_empty_secrets_are_not_counted_as_guesses(secret):
    checker = gate(Clock())
    for _ in range(10):
        with pytest.raises(AdminRefused, match="none was given"):
            checker.require("", "10.0.0.1")
    checker.require(secret, "10.0.0.1")


def test_success_resets_the_client_count_and_old_failures_expire(secret):
    clock = Clock()
    checker = gate(clock, overall=100)
    for _ in range(2):
        with pytest.raises(AdminRefused):
            checker.require("wrong", "c")
    checker.require(secret, "c")
    for _ in range(2):
        with pytest.raises(AdminRefused, match="Wrong admin secret"):
            checker.require("wrong", "c")
    clock.now += 61  # outside the window: the two are forgotten
    for _ in range(2):
        with pytest.raises(AdminRefused, match="Wrong admin secret"):
            checker.require("wrong", "c")


def test_overall_lockout_stops_guessing_from_many_clients(secret):
    clock = Clock()
    checker = gate(clock)
    for n in range(4):
        with pytest.raises(AdminRefused, match="Wrong admin secret"):
            checker.require("wrong", f"10.0.0.{n}")
    with pytest.raises(AdminLockedOut, match="on this server"):
        checker.require("wrong", "10.0.0.9")
    with pytest.raises(AdminLockedOut, match="on this server"):
        checker.require(secret, "10.0.0.99")
    clock.now += 121
    checker.require(secret, "10.0.0.99")


def test_concurrent_guesses_never_get_past_the_limit(secret):
    checker = gate(Clock(), per_client=1000, overall=50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def guess() -> None:
        for _ in range(20):
            try:
                checker.require("wrong", threading.current_thread().name)
            except AdminLockedOut:
                result = "locked"
            except AdminRefused:
                result = "wrong"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=guess, name=f"client-{n}") for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("wrong") == 49 and outcomes.count("locked") == 160 - 49


@settings(deadline=None, max_examples=100)
@given(st.text(max_size=200))
def test_any_given_text_ends_in_pass_or_a_typed_refusal(given_text):
    checker = AdminGate(AttemptLimits(per_client=10**9, overall=10**9))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ADMIN_SECRET_ENV, SECRET)
        patch.delenv(PUBLIC_DEMO_ENV, raising=False)
        try:
            checker.require(given_text, given_text[:20])
        except AdminRefused as exc:
            assert SECRET not in str(exc) and str(exc)
        else:
            assert given_text.strip() == SECRET


def test_admin_panel_is_served_only_in_the_full_app():
    assert access.admin_panel_allowed("full")
    assert not access.admin_panel_allowed("rating")
    assert not access.admin_panel_allowed("anything-else")


def test_rating_keeps_its_names():
    assert rating.require_admin is access.require_admin and rating.AdminRefused is AdminRefused
