"""The backend contract on ChatModel: capability flags read from the classes, availability that never
downloads, seeds resolved once in `stream`, close() that frees llama.cpp weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import llama_cpp.llama
import pytest

from cbtcompare.models.base import BackendCapabilities, ChatModel, Message, ModelError, ModelSpec, Sampling
from cbtcompare.models.defaults import default_gguf_path
from cbtcompare.models.llamacpp import LlamaCppModel, SharedWeights, keep_prefix_per_role
from cbtcompare.models.registry import BACKENDS, Registry, backend_capabilities, backend_class, backends_with


def test_capabilities_say_which_backends_are_endpoints_and_which_can_be_trained():
    assert backends_with("remote") == {"openai", "gemini"}
    assert backends_with("local_weights") == {"llamacpp", "hf"}
    assert backends_with("trainable") == {"llamacpp", "hf"}
    assert backends_with("grammar") == {"llamacpp"}
    assert backends_with("json_schema") == {"llamacpp", "openai", "gemini"}
    assert "gemini" not in backends_with("adapters")


def test_capabilities_come_from_the_class_and_load_nothing(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a capability question constructed a model")

    for backend in BACKENDS:
        monkeypatch.setattr(backend_class(backend), "__init__", refuse)
    answers = {backend: backend_capabilities(backend) for backend in BACKENDS}
    assert all(isinstance(a, BackendCapabilities) and a.backend == b for b, a in answers.items())
    assert answers["llamacpp"].remote is False and answers["openai"].remote is True


def test_unknown_capability_and_backend_are_named():
    with pytest.raises(ValueError, match="unknown capability 'gpu'.*remote"):
        backends_with("gpu")
    with pytest.raises(Exception, match="unknown backend 'vllm-magic'"):
        backend_capabilities("vllm-magic")


def test_every_backend_declares_unavailable_reason_on_the_contract():
    assert ChatModel.unavailable_reason.__doc__ and "never download" in ChatModel.unavailable_reason.__doc__
    for backend in BACKENDS:
        assert "unavailable_reason" in vars(backend_class(backend)), backend


# --- availability never downloads --------------------------------------------------------------------------


class RecordingHub:
    """A fake Hugging Face endpoint on 127.0.0.1 that answers 404 and records every request it gets."""

    def __init__(self) -> None:
        requests = self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                requests.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = _answer

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def recording_hub():
    hub = RecordingHub()
    yield hub
    hub.close()


AVAILABILITY_SCRIPT = """
import json, sys
from cbtcompare.models.defaults import default_gguf_path
from cbtcompare.models.registry import Registry
registry = Registry.from_files()
print(json.dumps({n: [a.available, a.reason] for n in sys.argv[1:] for a in [registry.availability(n)]}))
"""


def availability_in_fresh_process(models: Path, names: list[str], env: dict[str, str]) -> dict[str, list]:
    """Ask the registry in a new interpreter, so huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE afresh."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    environment.update(env, CBTCOMPARE_MODELS=str(models))
    done = subprocess.run(
        [sys.executable, "-c", AVAILABILITY_SCRIPT, *names],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def fake_cached_file(hf_home: Path, repo: str, filename: str, content: bytes) -> None:
    """Lay out a file as huggingface_hub's cache holds it (refs/main -> snapshots/<revision>/file)."""
    repo_dir = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(content)


def test_availability_of_hub_files_never_downloads(tmp_path, recording_hub):
    hf_home = tmp_path / "hf"
    fake_cached_file(hf_home, "cached/gguf", "model.gguf", default_gguf_path().read_bytes()[:4096])
    fake_cached_file(hf_home, "cached/notgguf", "model.gguf", b"<html>not a model</html>")
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  - {name: remote-weights, backend: llamacpp, weights: 'hf:nobody/absent:model.gguf'}\n"
        "  - {name: remote-adapter, backend: llamacpp, weights: 'embedded:smollm2',"
        " adapter: 'hf:nobody/absent:a.gguf'}\n"
        "  - {name: cached-weights, backend: llamacpp, weights: 'hf:cached/gguf:model.gguf'}\n"
        "  - {name: cached-junk, backend: llamacpp, weights: 'hf:cached/notgguf:model.gguf'}\n"
        "  - {name: hf-remote, backend: hf, weights: 'hf:nobody/absent:model.gguf'}\n"
    )
    names = ["remote-weights", "remote-adapter", "cached-weights", "cached-junk", "hf-remote"]
    online = {"HF_ENDPOINT": recording_hub.url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "0"}

    answers = availability_in_fresh_process(models, names, online)

    assert recording_hub.requests == []
    # not cached, Hub reachable: listed as available, fetched when the model is first loaded
    assert answers["remote-weights"] == [True, ""] and answers["remote-adapter"] == [True, ""]
    assert answers["cached-weights"] == [True, ""]
    assert answers["cached-junk"][0] is False and "is not a GGUF file" in answers["cached-junk"][1]

    offline = availability_in_fresh_process(models, names[:2], {**online, "HF_HUB_OFFLINE": "1"})
    assert recording_hub.requests == []
    for name in names[:2]:
        assert offline[name][0] is False and "not in the Hugging Face cache" in offline[name][1], offline[name]


# --- seeds are resolved once, in stream -------------------------------------------------------------------


class EchoSeed(ChatModel):
    """A backend that writes back the seed it was handed (the base class is what is under test)."""

    supports_seed = True

    def _stream(self, messages, sampling, usage):
        yield str(sampling.seed)


def test_stream_hands_the_backend_the_seed_it_records():
    model = EchoSeed(ModelSpec(name="echo", backend="llamacpp", weights="embedded:smollm2"))
    seeds = set()
    for _ in range(20):
        stream = model.stream([Message("user", "hi")], Sampling())
        text = "".join(stream)
        assert stream.usage.seed is not None and text == str(stream.usage.seed)
        seeds.add(stream.usage.seed)
    assert len(seeds) > 1, "every unseeded request got the same seed"
    seeded = model.stream([Message("user", "hi")], Sampling(seed=7))
    assert "".join(seeded) == "7" and seeded.usage.seed == 7
    assert model.complete_json([Message("user", "hi")], {"type": "string"}, Sampling(seed=8)) == "8"


def test_a_backend_without_seeds_records_none():
    class NoSeed(EchoSeed):
        supports_seed = False

    stream = NoSeed(ModelSpec(name="n", backend="llamacpp", weights="embedded:smollm2")).stream([Message("user", "x")])
    assert "".join(stream) == "None" and stream.usage.seed is None


# --- one shared-weights entry per file, reference counted, freed by close() ---------------------------------


@pytest.fixture
def private_gguf(tmp_path) -> Path:
    """The default GGUF under a path no other test uses, so its shared entry is this test's alone."""
    target = tmp_path / "private.gguf"
    try:
        os.link(default_gguf_path(), target)
    except OSError:
        shutil.copyfile(default_gguf_path(), target)
    return target


def loaded_entries(path: Path) -> list[SharedWeights]:
    return [w for w in SharedWeights.loaded() if w.path.resolve() == path.resolve()]


def test_two_context_sizes_share_one_weights_load_and_closing_both_frees_it(private_gguf, monkeypatch):
    loads = []
    real_model = llama_cpp.llama.internals.LlamaModel

    def counting_model(**kwargs):
        loads.append(kwargs["path_model"])
        return real_model(**kwargs)

    monkeypatch.setattr(llama_cpp.llama.internals, "LlamaModel", counting_model)
    small = LlamaCppModel(ModelSpec(name="small", backend="llamacpp", weights=str(private_gguf), n_ctx=512))
    large = LlamaCppModel(ModelSpec(name="large", backend="llamacpp", weights=str(private_gguf), n_ctx=1024))
    assert large.shared is small.shared and len(loaded_entries(private_gguf)) == 1
    assert loads == [str(private_gguf)], "the second context size loaded the weights again"

    greedy = Sampling(temperature=0.0, max_tokens=4, seed=0)
    hello = [Message("user", "Hello")]
    assert small.complete(hello, greedy) == large.complete(hello, greedy)
    sizes = sorted(llama.n_ctx() for llama in small.shared._contexts)
    assert sizes == [512, 1024]

    shared = small.shared
    weights = shared._first._model  # the LlamaModel that owns the llama_model
    small.close()
    assert loaded_entries(private_gguf) == [shared] and weights.model is not None
    assert large.complete(hello, greedy), "closing one model freed weights another still uses"
    large.close()
    large.close()  # closing twice is harmless
    assert loaded_entries(private_gguf) == []
    assert weights.model is None, "the llama_model was not freed when its last user closed"
    assert all(llama._ctx.ctx is None for llama in shared._contexts or [shared._first])
    with pytest.raises(ModelError, match="closed"):
        small.complete(hello, greedy)

    again = LlamaCppModel(ModelSpec(name="again", backend="llamacpp", weights=str(private_gguf), n_ctx=512))
    assert again.shared is not shared and len(loads) == 2
    again.close()


def test_registry_close_frees_the_weights_it_loaded(private_gguf, tmp_path):
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n  - {{name: mine, backend: llamacpp, weights: '{private_gguf}'}}\n"
        f"  - {{name: mine-long, backend: llamacpp, weights: '{private_gguf}', n_ctx: 4096}}\n"
    )
    registry = Registry.from_files(models)
    assert registry.load("mine").shared is registry.load("mine-long").shared
    registry.close()
    assert loaded_entries(private_gguf) == []


def test_roles_on_one_file_each_get_a_warm_context(private_gguf):
    therapist = LlamaCppModel(ModelSpec(name="therapist", backend="llamacpp", weights=str(private_gguf)))
    patient = LlamaCppModel(ModelSpec(name="patient", backend="llamacpp", weights=str(private_gguf), n_ctx=1024))
    judge = EchoSeed(ModelSpec(name="judge", backend="llamacpp", weights="embedded:smollm2"))  # not llama.cpp
    try:
        assert therapist.shared._warm_floor == 1
        keep_prefix_per_role([therapist, patient, judge])
        assert therapist.shared._warm_floor == 2
        keep_prefix_per_role([therapist])  # never lowers what another caller asked for
        assert therapist.shared._warm_floor == 2
    finally:
        therapist.close()
        patient.close()
