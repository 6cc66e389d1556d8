"""Time to first token through the running app vs calling the backends directly, and where the difference goes.

Both sides do the same work: the same two models (smollm2-instruct and smollm2-cbt-prompted), the same system
prompt, the sampling the Compare tab resolves for them (the shared-sampling rule, so the spec's repeat penalty
too) and the same seed, streaming at once; the time counted is until pane A's first visible text.

The app side reads the event stream as a browser does: each round is a new visitor who opens the page (its
queued load events run, as a page fires them on opening: Gradio builds a session's state then) and clicks Send;
it posts the Send to the queue and times the bytes of the first update whose pane A has text as they arrive.
Printed beside it, not in the ratio: the Send as a new session's very first event (no page opened, so it also
pays Gradio's session set-up, a copy of every block's config: how this benchmark measured before), and through
gradio_client, which polls its message queue every 50 ms (gradio_client/utils.py, stream_sse_v1plus) and so adds
0-50 ms that no browser sees. Each side's message has its own first word, so none finds another's prompt in a KV
cache. Rounds alternate page/direct/no-page/gradio_client; medians over ROUNDS (`--rounds=N`). Last line:
ratio=<app median / direct median>. Target <= 1.2 on an idle machine.

`--breakdown` runs the app inside this process (launched as app.py launches it, so with its GIL switch
interval, here for the whole process), on the very models the direct side calls, and prints where its time to
first token goes, from spans taken inside it (queue admission, session set-up, the backend's own first token,
the handler's first yield with text, the way to the reader), with the CPU time of each part that runs in one
thread. Its spans are for finding costs, not a ratio (the reader shares the process and its GIL).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import _common
import httpx
from gradio_client import Client
from gradio_client.utils import apply_diff

from cbtcompare.models.registry import Registry
from cbtcompare.models.streams import side_by_side
from cbtcompare.prompts import resolve_system_prompt
from cbtcompare.seeds import derive_seed
from cbtcompare.simulate.settings import shared_sampling
from cbtcompare.transcript import Turn, therapist_messages

ROUNDS = 7
MODELS = ("smollm2-instruct", "smollm2-cbt-prompted")
PROMPT = "You are a supportive therapist. Keep replies short."
MAX_TOKENS = 16
CHOSEN = {"temperature": 0.7, "top_p": 0.95, "max_tokens": MAX_TOKENS}


def send_inputs(message: str, seed: int) -> tuple[object, ...]:
    """The /send inputs a person's click sends: message, three pickers, prompt, sliders, seed."""
    return (message, *MODELS, "(none)", PROMPT, CHOSEN["temperature"], CHOSEN["top_p"], MAX_TOKENS, seed)


def has_text(chat: object) -> bool:
    """Whether a chat value's last message is the assistant's, with text (Gradio 6: a list of typed parts)."""
    if not isinstance(chat, list) or not chat or not isinstance(chat[-1], dict) or chat[-1].get("role") != "assistant":
        return False
    content = chat[-1].get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return bool(content)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str) -> None:
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the app did not answer at {url}")


def start_app(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "CBTCOMPARE_DATA_DIR": str(data_dir),
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=_common.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url)
    except RuntimeError:
        process.kill()
        raise
    return process, url


class SendStream:
    """The app's /send event, posted to the queue and read from its event stream as the browser's client does."""

    def __init__(self, url: str) -> None:
        client = Client(url, verbose=False)
        self.fn_index = client._infer_fn_index("/send", None)
        self.endpoint = client.endpoints[self.fn_index]
        self.join_url, self.data_url = client.sse_data_url, client.sse_url
        dependency = next(d for d in client.config["dependencies"] if d.get("id") == self.fn_index)
        elem_ids = {c["id"]: c.get("props", {}).get("elem_id") for c in client.config["components"]}
        self.pane_a = [elem_ids.get(i) for i in dependency["outputs"]].index("pane-0")
        self.http = httpx.Client(timeout=httpx.Timeout(None))  # one keep-alive connection, as a page has
        self.page_loads = [
            (d["id"], len(d["inputs"]))
            for d in client.config["dependencies"]
            if any(t[1] == "load" for t in d.get("targets") or []) and d.get("queue") is not False
        ]

    def _join(self, session_hash: str, fn_index: int, data: list[object]) -> None:
        body = {
            "data": data,
            "fn_index": fn_index,
            "session_hash": session_hash,
            "event_data": None,
            "trigger_id": None,
        }
        self.http.post(self.join_url, json=body).raise_for_status()

    def _events(self, session_hash: str) -> Iterator[tuple[float, dict]]:
        """The session's event stream: (perf_counter when its bytes arrived, message) for each message."""
        with self.http.stream("GET", self.data_url, params={"session_hash": session_hash}) as response:
            buffer = b""
            for chunk in response.iter_bytes():
                arrived = time.perf_counter()
                buffer += chunk
                while b"\n\n" in buffer:
                    line, buffer = buffer.split(b"\n\n", 1)
                    if line.startswith(b"data:"):
                        yield arrived, json.loads(line[5:])
        raise RuntimeError("the app's event stream ended before its reply")

    def open_page(self) -> str:
        """A new visitor's page, as a browser opens it: a new session whose queued load events have run (the
        page fires them as it opens, before anyone can type; Gradio builds a session's state, a copy of every
        block's config, on the session's first event). Returns the session."""
        session_hash = uuid.uuid4().hex[:12]
        for fn_index, inputs in self.page_loads:
            self._join(session_hash, fn_index, [None] * inputs)
        completed = 0
        for _, event in self._events(session_hash):
            if event.get("msg") == "process_completed":
                completed += 1
                if completed == len(self.page_loads):
                    return session_hash
        raise RuntimeError("unreachable")

    def first_token(
        self, message: str, seed: int, marks: dict[str, float] | None = None, *, session_hash: str | None = None
    ) -> float:
        """Seconds from the click to the bytes of the first update with pane A's text; waits for the end. Without
        `session_hash` the Send is a new session's first event (no page opened: it pays the session's set-up)."""
        marks = {} if marks is None else marks
        session_hash = session_hash or uuid.uuid4().hex[:12]
        marks["posted"] = started = time.perf_counter()
        self._join(session_hash, self.fn_index, list(self.endpoint.insert_empty_state(*send_inputs(message, seed))))
        marks["joined"] = time.perf_counter()
        first = None
        outputs: list[object] | None = None
        for arrived, event in self._events(session_hash):
            kind = event.get("msg")
            if kind not in ("process_generating", "process_completed"):
                continue
            output = event.get("output") or {}
            if not event.get("success", True) or "data" not in output:
                raise RuntimeError(f"the app's /send failed: {output}")
            values = output["data"]
            if outputs is None or kind == "process_completed":
                outputs = list(values)
            else:
                outputs = [apply_diff(old, diff) for old, diff in zip(outputs, values, strict=True)]
            if first is None and has_text(outputs[self.pane_a]):
                first = arrived - started
                marks["sse_first_text"] = arrived
            if kind == "process_completed":
                if first is None:
                    raise RuntimeError("no token arrived through the app")
                return first
        raise RuntimeError("unreachable")


def client_first_token(url: str, message: str, seed: int) -> float:
    """The same through gradio_client (polls its message queue every 50 ms)."""
    client = Client(url, verbose=False)
    started = time.perf_counter()
    job = client.submit(*send_inputs(message, seed), api_name="/send")
    for output in job:
        if has_text(output[5]):
            elapsed = time.perf_counter() - started
            job.result()
            return elapsed
    raise RuntimeError("no token arrived through gradio_client")


def direct_first_token(registry: Registry, message: str, seed: int) -> float:
    """Both models streaming at once from this process, as the tab runs them; seconds to pane A's first text."""
    first: list[float] = []
    sampling = shared_sampling([registry.spec(name) for name in MODELS], CHOSEN)
    sampling = sampling.merged(seed=derive_seed(seed, "therapist", 1, 0))
    started = time.perf_counter()

    def run(name: str) -> None:
        prompt = resolve_system_prompt(registry.spec(name).system_prompt, PROMPT)
        messages = therapist_messages([Turn(role="patient", text=message)], prompt.text)
        text = ""
        for chunk in registry.load(name).stream(messages, sampling):
            text += chunk
            if name == MODELS[0] and text and not first:
                first.append(time.perf_counter() - started)

    threads = [threading.Thread(target=run, args=(name,)) for name in MODELS]
    with side_by_side(len(MODELS)):  # as the tab announces its panes, so both sides divide the cores alike
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return first[0]


def main(rounds: int) -> None:
    registry = Registry.from_files()
    for name in MODELS:
        registry.load(name)
    with tempfile.TemporaryDirectory() as data:
        process, url = start_app(Path(data))
        try:
            sends = SendStream(url)
            sends.first_token("warm up", 0)  # the models load, and the crisis classifier (its load ends the send)
            sends.first_token("warm up on a page", 0, session_hash=sends.open_page())
            client_first_token(url, "warm up again", 0)
            direct_first_token(registry, "warm up", 0)
            app_times, cold_times, client_times, direct_times = [], [], [], []
            for round_index in range(rounds):
                # each send to the app has its own first word, so none finds another's prompt in the app's KV
                # cache; the direct side has models of its own, so it sends the page's message
                message = f"Round {round_index}: I keep worrying about my job."
                page = sends.open_page()
                app_times.append(sends.first_token(message, round_index, session_hash=page))
                direct_times.append(direct_first_token(registry, message, round_index))
                cold_times.append(sends.first_token(f"Cold {round_index}: I keep worrying about my job.", round_index))
                client_times.append(
                    client_first_token(url, f"Client {round_index}: I keep worrying about my job.", round_index)
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    app_median, direct_median = _common.median(app_times), _common.median(direct_times)
    cold_median, client_median = _common.median(cold_times), _common.median(client_times)
    print(
        f"measured: click to pane A's first text, {MODELS[0]} beside {MODELS[1]}, {MAX_TOKENS} tokens,"
        f" medians of {rounds} alternating rounds"
    )
    print(f"direct backend (this process calls both models): {direct_median * 1000:.0f} ms")
    print(
        "through the app (python app.py), a new visitor's page opened, Send read as a browser reads it:"
        f" {app_median * 1000:.0f} ms"
    )
    print(
        f"through the app, Send as a new session's first event (no page: it pays Gradio's session set-up):"
        f" {cold_median * 1000:.0f} ms; ratio {cold_median / direct_median:.3f}"
    )
    print(
        f"through the app via gradio_client (no page, polls every 50 ms): {client_median * 1000:.0f} ms;"
        f" ratio {client_median / direct_median:.3f}"
    )
    print(f"ratio={app_median / direct_median:.3f}")


# --breakdown ----------------------------------------------------------------------------------------------


class Spans:
    """Timestamps (perf_counter) and CPU times of the current round, the first of each name kept."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.marks: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, list[tuple[float, float]]] = {}

    def mark(self, name: str, at: float | None = None) -> None:
        with self.lock:
            self.marks.setdefault(name, time.perf_counter() if at is None else at)

    def call(self, name: str, start: float, end: float, cpu: float) -> None:
        with self.lock:
            self.calls.setdefault(name, []).append((start, end))
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu

    def reset(self) -> None:
        with self.lock:
            self.marks, self.cpu, self.calls = {}, {}, {}


def _timed(spans: Spans, name: str, fn: Callable) -> Callable:
    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spans.call(name, start, time.perf_counter(), time.thread_time() - cpu)

    return timed


def _timed_async(spans: Spans, name: str, fn: Callable) -> Callable:
    async def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return await fn(*args, **kwargs)
        finally:
            spans.call(name, start, time.perf_counter(), time.thread_time() - cpu)

    return timed


def instrument(spans: Spans, demo: object, pane_a: int) -> None:
    """Wrap the pieces of one Send's path to first token: the handler, session set-up, the workers, the
    crisis screen, and Gradio's pre/postprocessing and streaming diffs."""
    import cbtcompare.compare as compare

    send_fn = next(fn for fn in demo.fns.values() if fn.api_name == "send")  # type: ignore[attr-defined]
    handler = send_fn.fn

    def traced_handler(*args, **kwargs) -> Iterator[list[object]]:  # type: ignore[no-untyped-def]
        spans.mark("handler_entered")
        for yields, output in enumerate(handler(*args, **kwargs)):
            if has_text(output[pane_a]):
                spans.mark("handler_first_text")
                spans.mark("handler_yields_before_text", float(yields))
            yield output

    send_fn.fn = traced_handler

    from_settings = compare.CompareSession.from_settings.__func__  # type: ignore[attr-defined]
    compare.CompareSession.from_settings = classmethod(_timed(spans, "session_setup", from_settings))

    original_send = compare.CompareSession.send

    def traced_send(self, text: str) -> Iterator[list[compare.Pane]]:  # type: ignore[no-untyped-def]
        spans.mark("send_called")
        updates = original_send(self, text)
        started = next(updates)
        spans.mark("workers_started")
        yield started
        yield from updates

    compare.CompareSession.send = traced_send

    original_run_pane = compare.CompareSession._run_pane

    class FirstChunk:
        def __init__(self, events, index: int) -> None:  # type: ignore[no-untyped-def]
            self.events, self.index = events, index

        def put(self, item) -> None:  # type: ignore[no-untyped-def]
            if item[1]:
                spans.mark(f"pane{self.index}_first_chunk")
            self.events.put(item)

    def traced_run_pane(self, index, pane, events) -> None:  # type: ignore[no-untyped-def]
        spans.mark(f"pane{index}_thread")
        original_run_pane(self, index, pane, FirstChunk(events, index))

    compare.CompareSession._run_pane = traced_run_pane

    original_annotate = compare.annotate_turn

    def traced_annotate(turn, **kwargs):  # type: ignore[no-untyped-def]
        name = "crisis_screen" if turn.role == "patient" else "reply_tags"
        return _timed(spans, name, original_annotate)(turn, **kwargs)

    compare.annotate_turn = traced_annotate

    demo.preprocess_data = _timed_async(spans, "gradio_preprocess", demo.preprocess_data)  # type: ignore[attr-defined]
    demo.postprocess_data = _timed_async(spans, "gradio_postprocess", demo.postprocess_data)  # type: ignore[attr-defined]
    demo.handle_streaming_diffs = _timed(spans, "gradio_diffs", demo.handle_streaming_diffs)  # type: ignore[attr-defined]


def breakdown(rounds: int, *, screen: bool = True, switch_interval: float | None = None) -> None:
    """`screen=False` (`--no-screen`, a diagnostic only) skips the crisis screen, to see what it costs the
    backends it runs beside; `switch_interval` (`--switch-interval=S`, a diagnostic) replaces the app's."""
    with tempfile.TemporaryDirectory() as data:
        os.environ["CBTCOMPARE_DATA_DIR"] = data
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        from cbtcompare.safety import detect_crisis
        from cbtcompare.ui import AppContext, build_app, launch

        context = AppContext.from_environment()
        demo = build_app(context, warm_up=False)
        port = free_port()
        # as app.py launches it (so with its GIL switch interval, here for this whole process);
        # _frontend=False: Gradio's own 3 s check of the page fails on a loaded machine; wait_for checks it instead
        launch(demo, server_name="127.0.0.1", server_port=port, quiet=True, _frontend=False)
        if switch_interval is not None:
            sys.setswitchinterval(switch_interval)
        detect_crisis("hello")  # the classifier loaded, as the app's warm-up does in the background
        url = f"http://127.0.0.1:{port}/"
        wait_for(url)
        sends = SendStream(url)
        spans = Spans()
        instrument(spans, demo, sends.pane_a)
        if not screen:
            import cbtcompare.compare as compare

            compare.CompareSession._screen_person_turn = lambda self, message, position: None
        sends.first_token("warm up", 0, session_hash=sends.open_page())
        direct_first_token(context.registry, "warm up", 0)
        rows = []
        for round_index in range(rounds):
            message = f"Round {round_index}: I keep worrying about my job."
            marks: dict[str, float] = {}
            page = sends.open_page()
            spans.reset()
            app = sends.first_token(message, round_index, marks, session_hash=page)
            time.sleep(0.2)  # let the handler's last spans land
            # its own first word: the same message would find its whole prompt in the KV cache the app just filled
            direct = direct_first_token(
                context.registry, f"Again {round_index}: I keep worrying about my job.", round_index
            )
            rows.append(_round_row(spans, marks, app, direct))
        demo.close()
    _print_breakdown(rows)


def _round_row(spans: Spans, marks: dict[str, float], app: float, direct: float) -> dict[str, float]:
    m = {**spans.marks, **marks}
    t0 = m["posted"]

    def at(name: str) -> float:
        return (m[name] - t0) * 1000 if name in m else float("nan")

    first_text = m.get("handler_first_text", float("inf"))
    before = {
        name: sum((end - start) for start, end in calls if end <= first_text) * 1000
        for name, calls in spans.calls.items()
    }
    screen = spans.calls.get("crisis_screen", [(float("nan"), float("nan"))])[0]
    return {
        "app first text at the reader": app * 1000,
        "direct first text (same models, this process)": direct * 1000,
        "POST /queue/join answered": at("joined"),
        "handler entered (queue admission, preprocess)": at("handler_entered"),
        "session set-up (settings, models, transcripts)": before.get("session_setup", 0.0),
        "workers started": at("workers_started"),
        "pane A worker -> its first chunk (backend TTFT in the app)": at("pane0_first_chunk") - at("pane0_thread"),
        "pane A first chunk": at("pane0_first_chunk"),
        "handler's first yield with text": at("handler_first_text"),
        "  yields before it": m.get("handler_yields_before_text", float("nan")),
        "  gradio preprocess before it": before.get("gradio_preprocess", 0.0),
        "  gradio postprocess before it": before.get("gradio_postprocess", 0.0),
        "  gradio diffs before it": before.get("gradio_diffs", 0.0),
        "reader got it (postprocess, diff, SSE)": at("sse_first_text") - at("handler_first_text"),
        "crisis screen start": (screen[0] - t0) * 1000,
        "crisis screen wall": (screen[1] - screen[0]) * 1000,
        "crisis screen CPU": spans.cpu.get("crisis_screen", float("nan")) * 1000,
        "gradio postprocess CPU (whole send)": spans.cpu.get("gradio_postprocess", 0.0) * 1000,
        "gradio postprocess calls (whole send)": float(len(spans.calls.get("gradio_postprocess", []))),
    }


def _print_breakdown(rows: list[dict[str, float]]) -> None:
    print(f"where the app's time to first token goes (median of {len(rows)} rounds, ms from the click):")
    for key in rows[0]:
        values = [row[key] for row in rows if row[key] == row[key]]
        shown = f"{statistics.median(values):8.1f}" if values else "     n/a"
        print(f"{shown}  {key}")
    app = statistics.median(row["app first text at the reader"] for row in rows)
    direct = statistics.median(row["direct first text (same models, this process)"] for row in rows)
    print(f"in-process ratio (not the benchmark's figure) {app / direct:.3f}")


if __name__ == "__main__":
    option = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in sys.argv[1:] if "=" in a}
    rounds = int(option.get("--rounds", ROUNDS))
    if "--breakdown" in sys.argv:
        switch = option.get("--switch-interval")
        breakdown(rounds, screen="--no-screen" not in sys.argv, switch_interval=float(switch) if switch else None)
    else:
        main(rounds)
