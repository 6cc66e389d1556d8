"""Side-by-side sessions: one person's message broadcast to 1-3 therapist models that stream at once.

A `CompareSession` is one user's state (the UI keeps it in gr.State; the CLI in a variable). Every pane
gets the same system-prompt rule, sampling settings and per-turn seed, so differences come from the
models. Each pane streams in its own thread; a pane that fails says why and the others go on. Person
turns are checked for crisis language and model turns for harmful content; model turns are tagged with
CBT techniques. This module never imports gradio.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from cbtcompare.annotate import annotate_turn, annotation_versions
from cbtcompare.models.base import ChatModel, ModelError, Sampling, Usage
from cbtcompare.models.registry import Registry
from cbtcompare.prompts import DEFAULT_SESSION_PROMPT, SystemPrompt, load_prompt, resolve_system_prompt
from cbtcompare.safety import CrisisResult, crisis_result_from_flags
from cbtcompare.seeds import derive_seed
from cbtcompare.transcript import Transcript, Turn, new_id, therapist_messages

MAX_MESSAGE_CHARS = 4000
MAX_PANES = 3


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


@dataclass
class CompareSession:
    registry: Registry
    model_names: list[str]
    session_prompt: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0
    group_id: str = field(default_factory=new_id)
    panes: list[Pane] = field(default_factory=list)
    crisis: CrisisResult | None = None  # the newest person turn's crisis finding: a hit, or not screened
    _attempt: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if not 1 <= len(self.model_names) <= MAX_PANES:
            raise ValueError(f"pick between 1 and {MAX_PANES} models; got {len(self.model_names)}")
        if self.session_prompt is None:
            self.session_prompt = default_session_prompt()
        self.panes = [self._new_pane(name) for name in self.model_names]

    def _new_pane(self, name: str) -> Pane:
        spec = self.registry.spec(name)
        model: ChatModel | None = None
        error = None
        try:
            model = self.registry.load(name)
        except ModelError as exc:
            error = str(exc)
        prompt = resolve_system_prompt(spec.system_prompt, self.session_prompt)
        transcript = Transcript(
            group_id=self.group_id,
            kind="compare",
            therapist=_model_info(model, spec.model_dump(mode="json")),
            system_prompt=prompt.text,
            sampling=self.sampling.model_dump(mode="json"),
            seed=self.seed,
            prompt_versions=annotation_versions(system=prompt.version or "none", system_source=prompt.source),
            context_policy=spec.context_policy,
        )
        return Pane(name=name, model=model, system_prompt=prompt, transcript=transcript, error=error)

    # Actions ---------------------------------------------------------------------------------------

    def send(self, text: str) -> Iterator[list[Pane]]:
        """Broadcast a person's message to every pane and stream the replies; yields the panes as they fill.

        The models start first; the person's turn is screened for crisis language in its own thread while
        they work, so screening never delays a reply; its flags are on the turn before this generator ends.
        """
        message = validate_message(text)
        position = len(self.panes[0].transcript.turns)
        for pane in self.panes:
            pane.transcript.turns.append(Turn(role="patient", text=message))
        self._attempt = 0
        self.crisis = None
        updates = self._generate_all()
        started = next(updates)
        screening = threading.Thread(target=self._screen_person_turn, args=(message, position), daemon=True)
        screening.start()
        yield started
        yield from updates
        screening.join()
        yield self.panes

    def _screen_person_turn(self, message: str, position: int) -> None:
        screened = annotate_turn(Turn(role="patient", text=message))
        for pane in self.panes:
            pane.transcript.turns[position].flags.update(screened.flags)
        self.crisis = crisis_result_from_flags(screened.flags)  # a hit, or a language the screen cannot read

    def regenerate(self) -> Iterator[list[Pane]]:
        """Replace each pane's last reply with a new one (a new seed from the same schedule)."""
        for pane in self.panes:
            turns = pane.transcript.turns
            if turns and turns[-1].role == "therapist":
                turns.pop()
        if not any(p.transcript.turns for p in self.panes):
            raise ValueError("nothing to regenerate yet; send a message first")
        self._attempt += 1
        yield from self._generate_all()

    def stop(self) -> None:
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
        self._stop.clear()
        events: queue.Queue[tuple[int, str | None]] = queue.Queue()
        workers = []
        for index, pane in enumerate(self.panes):
            if pane.model is None:
                continue
            pane.error = None
            pane.partial = ""
            pane.streaming = True
            worker = threading.Thread(target=self._run_pane, args=(index, pane, events), daemon=True)
            workers.append(worker)
            worker.start()
        running = len(workers)
        try:
            yield self.panes
            while running:
                index, chunk = events.get()
                if chunk is None:
                    running -= 1
                yield self.panes
        finally:
            self._stop.set()
            for worker in workers:
                worker.join()
            for pane in self.panes:
                pane.streaming = False

    def _run_pane(self, index: int, pane: Pane, events: queue.Queue[tuple[int, str | None]]) -> None:
        assert pane.model is not None
        turns = pane.transcript.turns
        seed = self._turn_seed(len(turns))
        sampling = self.sampling.merged(seed=seed)
        started = time.perf_counter()
        stream = None
        try:
            stream = pane.model.stream(therapist_messages(turns, pane.system_prompt.text), sampling)
            for chunk in stream:
                pane.partial += chunk
                events.put((index, chunk))
                if self._stop.is_set():
                    break
            pane.last_usage = stream.usage
            reply = Turn(
                role="therapist",
                text=stream.text.strip(),
                tokens=stream.usage.completion_tokens,
                seconds=round(time.perf_counter() - started, 3),
                seed=seed,
            )
            if self._stop.is_set():
                reply.flags["stopped"] = True
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


def _model_info(model: ChatModel | None, spec: dict[str, object]) -> dict[str, object]:
    if model is None:
        return {"name": spec["name"], "backend": spec["backend"], "spec": spec}
    return {**asdict(model.info()), "spec": spec}
