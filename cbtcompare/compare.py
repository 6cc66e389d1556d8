"""Side-by-side sessions: one person's message broadcast to 1-3 therapist models that stream at once.

A `CompareSession` is one user's state (the UI keeps it in gr.State; the CLI in a variable). Every pane
gets the same system-prompt rule, sampling settings and per-turn seed, so differences come from the
models; the sampling is resolved by the one shared-sampling rule (`cbtcompare.simulate.settings`), so a
comparison and `pair` decode a spec identically. Each pane streams in its own thread; a pane that fails
says why and the others go on. Person turns are checked for crisis language and model turns for harmful
content; model turns are tagged with CBT techniques and say when they were cut at the token budget.
A conversation can be snapshotted (`SavedComparison`) and resumed, and a person's recent ones are kept in
a `ComparisonHistory` (the UI keeps it in the browser). This module never imports gradio.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cbtcompare.annotate import annotate_turn, annotation_versions
from cbtcompare.config_errors import format_validation_error
from cbtcompare.models.base import ChatModel, ModelError, Sampling, Usage
from cbtcompare.models.registry import Registry
from cbtcompare.models.streams import side_by_side
from cbtcompare.prompts import DEFAULT_SESSION_PROMPT, SystemPrompt, load_prompt, resolve_system_prompt
from cbtcompare.provenance import describe
from cbtcompare.safety import CrisisResult, crisis_result_from_flags
from cbtcompare.seeds import derive_seed
from cbtcompare.simulate.settings import explicit_fields, shared_sampling
from cbtcompare.transcript import Transcript, Turn, new_id, therapist_messages, utc_now

MAX_MESSAGE_CHARS = 4000
MAX_PANES = 3
MAX_RECENT_COMPARISONS = 8


def default_session_prompt() -> str:
    return load_prompt(DEFAULT_SESSION_PROMPT).text


def validate_message(text: str | None) -> str:
    """The message to send, or ValueError saying what to fix."""
    cleaned = (text or "").strip()
    if not cleaned:
        raise ValueError("the message is empty; type something to send")
    if len(cleaned) > MAX_MESSAGE_CHARS:
        raise ValueError(
            f"the message is {len(cleaned):,} characters; the limit is {MAX_MESSAGE_CHARS:,}. Shorten it or split it"
        )
    return cleaned


@dataclass
class Pane:
    name: str
    model: ChatModel | None
    system_prompt: SystemPrompt
    transcript: Transcript
    error: str | None = None
    streaming: bool = False
    partial: str = ""
    last_usage: Usage | None = None

    @property
    def context_size(self) -> int | None:
        return self.model.context_length if self.model else None

    def context_used(self) -> int | None:
        if not self.last_usage or self.last_usage.prompt_tokens is None:
            return None
        return self.last_usage.prompt_tokens + self.last_usage.completion_tokens


class CompareSettings(BaseModel):
    """What a person chose for one comparison; any change starts a new conversation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[str, ...] = Field(min_length=1, max_length=MAX_PANES, description="registry names, one per pane")
    session_prompt: str | None = Field(None, description="the system prompt of panes whose spec names none")
    sampling: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the first model's spec sampling (the shared-sampling rule)"
    )
    seed: int = Field(0, description="the seed every per-turn seed is derived from")


class SavedComparison(BaseModel):
    """A conversation as it can be kept (in a browser, a file) and resumed: its settings and transcripts."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(max_length=64)
    settings: CompareSettings
    transcripts: list[Transcript] = Field(max_length=MAX_PANES)
    updated_at: str = Field(default_factory=utc_now, max_length=40)

    @property
    def person_turns(self) -> int:
        return sum(t.role == "patient" for t in self.transcripts[0].turns) if self.transcripts else 0

    def label(self) -> str:
        """How the list of recent comparisons names it: when, the models, the first message."""
        first = next((t.text for t in self.transcripts[0].turns if t.role == "patient"), "") if self.transcripts else ""
        opening = " ".join(first.split())[:48] or "(no message yet)"
        when = self.updated_at[:16].replace("T", " ")
        return f"{when} · {' vs '.join(self.settings.models)} · {self.person_turns} msg · {opening}"


class ComparisonHistory(BaseModel):
    """One person's recent comparisons, newest first, at most MAX_RECENT_COMPARISONS."""

    model_config = ConfigDict(extra="forbid")

    current: str | None = Field(None, description="group_id of the conversation open now")
    recent: list[SavedComparison] = Field(default_factory=list)

    def remember(self, saved: SavedComparison, *, current: bool = True) -> ComparisonHistory:
        """A new history with `saved` first (replacing its older copy); empty conversations are not listed."""
        others = [c for c in self.recent if c.group_id != saved.group_id]
        listed = [saved, *others] if saved.person_turns else others
        return ComparisonHistory(
            current=saved.group_id if current else self.current, recent=listed[:MAX_RECENT_COMPARISONS]
        )

    def find(self, group_id: str | None) -> SavedComparison | None:
        return next((c for c in self.recent if c.group_id == group_id), None)

    def choices(self) -> list[tuple[str, str]]:
        return [(c.label(), c.group_id) for c in self.recent]


def history_from_browser(raw: object) -> tuple[ComparisonHistory, str | None]:
    """The history a browser sent back, or an empty one and the reason it could not be read."""
    if raw in (None, "", {}):
        return ComparisonHistory(), None
    try:
        return ComparisonHistory.model_validate(raw), None
    except ValidationError as exc:
        reason = format_validation_error(exc, "the comparisons kept in this browser", whole="history")
        return ComparisonHistory(), f"{reason}; starting with an empty list"


@dataclass
class CompareSession:
    registry: Registry
    model_names: list[str]
    session_prompt: str | None = None
    sampling: Sampling | dict[str, Any] | None = None  # overrides; resolved by shared_sampling in __post_init__
    seed: int = 0
    group_id: str = field(default_factory=new_id)
    panes: list[Pane] = field(default_factory=list)
    crisis: CrisisResult | None = None  # the newest person turn's crisis finding: a hit, or not screened
    # How often, at most, `send` and `regenerate` yield while replies stream (0: on every chunk). A pane's first
    # chunk and its end are yielded at once whatever this says, and chunks held back are yielded when it is up.
    update_every_s: float = 0.0
    _attempt: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if not 1 <= len(self.model_names) <= MAX_PANES:
            raise ValueError(f"pick between 1 and {MAX_PANES} models; got {len(self.model_names)}")
        if self.session_prompt is None:
            self.session_prompt = default_session_prompt()
        specs = [self.registry.spec(name) for name in self.model_names]
        self.overrides = explicit_fields(self.sampling)
        self.sampling = shared_sampling(specs, self.overrides)
        self.panes = [self._new_pane(name) for name in self.model_names]

    @classmethod
    def from_settings(
        cls, registry: Registry, settings: CompareSettings, *, update_every_s: float = 0.0
    ) -> CompareSession:
        return cls(
            registry,
            list(settings.models),
            session_prompt=settings.session_prompt,
            sampling=settings.sampling,
            seed=settings.seed,
            update_every_s=update_every_s,
        )

    @classmethod
    def resume(cls, registry: Registry, saved: SavedComparison, *, update_every_s: float = 0.0) -> CompareSession:
        """The saved conversation, ready for the next message (models loaded again, turns kept), with the
        newest crisis finding among its person turns as `crisis`, so a reopened conversation shows it again."""
        session = cls.from_settings(registry, saved.settings, update_every_s=update_every_s)
        session.group_id = saved.group_id
        for pane, transcript in zip(session.panes, saved.transcripts, strict=False):
            pane.transcript = transcript
        session.crisis = newest_crisis(session.panes[0].transcript)
        return session

    @property
    def settings(self) -> CompareSettings:
        return CompareSettings(
            models=tuple(self.model_names),
            session_prompt=self.session_prompt,
            sampling=self.overrides,
            seed=self.seed,
        )

    def snapshot(self) -> SavedComparison:
        return SavedComparison(
            group_id=self.group_id,
            settings=self.settings,
            transcripts=[pane.transcript.model_copy(deep=True) for pane in self.panes],
        )

    @property
    def has_turns(self) -> bool:
        return any(pane.transcript.turns for pane in self.panes)

    def _new_pane(self, name: str) -> Pane:
        spec = self.registry.spec(name)
        model: ChatModel | None = None
        error = None
        try:
            model = self.registry.load(name)
        except ModelError as exc:
            error = str(exc)
        prompt = resolve_system_prompt(spec.system_prompt, self.session_prompt)
        provenance = describe(spec)
        transcript = Transcript(
            group_id=self.group_id,
            kind="compare",
            therapist=_model_info(model, spec.public_dict()),
            system_prompt=prompt.text,
            sampling=self.sampling.model_dump(mode="json"),
            seed=self.seed,
            prompt_versions=annotation_versions(system=prompt.version or "none", system_source=prompt.source),
            context_policy=spec.context_policy,
            meta={
                "variant": provenance.variant,
                "family": provenance.family,
                "provenance_rules": provenance.rules_version,
            },
        )
        return Pane(name=name, model=model, system_prompt=prompt, transcript=transcript, error=error)

    # Actions ---------------------------------------------------------------------------------------

    def send(self, text: str) -> Iterator[list[Pane]]:
        """Broadcast a person's message to every pane and stream the replies; yields the panes as they fill.

        The models start first; the person's turn is screened for crisis language in its own thread once the
        first texts have been taken, so screening never delays a reply; its flags are on the turn before this
        generator ends.
        A `stop()` from the moment this is called (also before the first token) ends every pane's reply.
        """
        message = validate_message(text)
        self._stop.clear()
        position = len(self.panes[0].transcript.turns)
        for pane in self.panes:
            pane.transcript.turns.append(Turn(role="patient", text=message))
        self._attempt = 0
        self.crisis = None
        updates = self._generate_all()
        started = next(updates)
        # Screening starts once the consumer has taken two updates with text (or the turn ended first): its
        # encoder would otherwise share the cores with prompt processing, and with the consumer's work of
        # showing the first text, whose bytes are still on their way when it asks for the next update. It
        # always runs and is joined, also when the consumer stops early.
        screening = threading.Thread(target=self._screen_person_turn, args=(message, position), daemon=True)
        try:
            yield started
            for taken, panes in enumerate(updates, start=1):
                yield panes
                if taken >= 2 and screening.ident is None:
                    screening.start()
        finally:
            if screening.ident is None:
                screening.start()
            screening.join()
        yield self.panes

    def _screen_person_turn(self, message: str, position: int) -> None:
        screened = annotate_turn(Turn(role="patient", text=message))
        for pane in self.panes:
            pane.transcript.turns[position].flags.update(screened.flags)
        self.crisis = crisis_result_from_flags(screened.flags)  # a hit, or a language the screen cannot read

    def regenerate(self) -> Iterator[list[Pane]]:
        """Replace each pane's last reply with a new one (a new seed from the same schedule)."""
        self._stop.clear()
        for pane in self.panes:
            turns = pane.transcript.turns
            if turns and turns[-1].role == "therapist":
                turns.pop()
        if not any(p.transcript.turns for p in self.panes):
            raise ValueError("nothing to regenerate yet; send a message first")
        self._attempt += 1
        yield from self._generate_all()

    def stop(self) -> None:
        """End the replies being generated now; a pane that has no token yet ends with none."""
        self._stop.set()

    def clear(self) -> None:
        self.group_id = new_id()
        self.crisis = None
        self._attempt = 0
        self.panes = [self._new_pane(name) for name in self.model_names]

    def transcripts(self) -> list[Transcript]:
        return [pane.transcript for pane in self.panes]

    # Generation ------------------------------------------------------------------------------------

    def _turn_seed(self, turn_index: int) -> int:
        return derive_seed(self.seed, "therapist", turn_index, self._attempt)

    def _generate_all(self) -> Iterator[list[Pane]]:
        events: queue.Queue[tuple[int, str | None]] = queue.Queue()
        workers = []
        streaming = [(index, pane) for index, pane in enumerate(self.panes) if pane.model is not None]
        with side_by_side(len(streaming)):  # so the first pane does not take every core before the others start
            for index, pane in streaming:
                pane.error = None
                pane.partial = ""
                pane.streaming = True
                worker = threading.Thread(target=self._run_pane, args=(index, pane, events), daemon=True)
                workers.append(worker)
                worker.start()
            try:
                yield self.panes
                yield from self._coalesced(events, running=len(workers))
            finally:
                self._stop.set()  # a consumer that stops iterating (or is cancelled) ends the workers too
                for worker in workers:
                    worker.join()
                for pane in self.panes:
                    pane.streaming = False

    def _coalesced(self, events: queue.Queue[tuple[int, str | None]], running: int) -> Iterator[list[Pane]]:
        """The panes after the workers' events, at most every `update_every_s`: a pane's first chunk and a
        pane's end at once, chunks held back as soon as the interval is up (not when the next chunk comes)."""
        answered: set[int] = set()
        last = float("-inf")  # when the panes were last yielded
        held = False  # chunks came since then
        while running:
            wait = max(0.0, last + self.update_every_s - time.monotonic()) if held else None
            try:
                arrived = [events.get(timeout=wait)]
            except queue.Empty:
                arrived = []  # the interval is up for the chunks held back
            while True:  # take everything already queued, so one yield shows it all
                try:
                    arrived.append(events.get_nowait())
                except queue.Empty:
                    break
            urgent = not arrived
            for index, chunk in arrived:
                held = True
                if chunk is None:
                    running -= 1
                    urgent = True
                elif index not in answered and self.panes[index].partial:
                    answered.add(index)  # its first visible text: shown at once, whatever the interval
                    urgent = True
            now = time.monotonic()
            if urgent or now - last >= self.update_every_s:
                last, held = now, False
                yield self.panes

    def _run_pane(self, index: int, pane: Pane, events: queue.Queue[tuple[int, str | None]]) -> None:
        assert pane.model is not None
        turns = pane.transcript.turns
        seed = self._turn_seed(len(turns))
        sampling = self.sampling.merged(seed=seed)
        started = time.perf_counter()
        stream = None
        try:
            if not self._stop.is_set():
                stream = pane.model.stream(therapist_messages(turns, pane.system_prompt.text), sampling)
                for chunk in stream:
                    pane.partial += chunk
                    events.put((index, chunk))
                    if self._stop.is_set():
                        break
                pane.last_usage = stream.usage
            reply = Turn(
                role="therapist",
                text=stream.text.strip() if stream is not None else "",
                tokens=stream.usage.completion_tokens if stream is not None else 0,
                seconds=round(time.perf_counter() - started, 3),
                seed=seed,
            )
            if self._stop.is_set():
                reply.flags["stopped"] = True
            elif stream is not None and stream.usage.finish_reason == "length":
                reply.flags["cut_at_max_tokens"] = sampling.max_tokens
            turns.append(annotate_turn(reply))
        except ModelError as exc:
            pane.error = str(exc)
        except Exception as exc:  # a backend bug must not take the other panes down
            pane.error = f"{type(exc).__name__}: {exc}"
        finally:
            if stream is not None:
                stream.close()
            pane.streaming = False
            events.put((index, None))


def newest_crisis(transcript: Transcript) -> CrisisResult | None:
    """The crisis finding of the newest person turn that has one (a hit, or a language the screen cannot read):
    what the tab's panel showed for this conversation, until the person dismissed it."""
    for turn in reversed(transcript.turns):
        if turn.role == "patient" and (found := crisis_result_from_flags(turn.flags)) is not None:
            return found
    return None


def _model_info(model: ChatModel | None, spec: dict[str, object]) -> dict[str, object]:
    if model is None:
        return {"name": spec["name"], "backend": spec["backend"], "spec": spec}
    return {**asdict(model.info()), "spec": spec}
