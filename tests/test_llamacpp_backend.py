"""The llama.cpp backend on the real SmolLM2 GGUF: streaming, seeds, templates, JSON, adapters, errors."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from cbtcompare.models.base import (
    AdapterMismatch,
    ContextOverflow,
    InvalidWeights,
    Message,
    ModelNotFound,
    ModelSpec,
    Sampling,
)
from cbtcompare.models.gguf_lora import gguf_tensor_shapes, random_lora_for, write_gguf_lora
from cbtcompare.models.llamacpp import LlamaCppModel
from cbtcompare.models.weights import resolve_weights

HELLO = [Message("user", "I have been feeling low and I can't sleep. What can I do?")]


def spec(**overrides) -> ModelSpec:
    values = {"name": "t", "backend": "llamacpp", "weights": "embedded:smollm2"}
    values.update(overrides)
    return ModelSpec(**values)


@pytest.fixture(scope="module")
def base() -> LlamaCppModel:
    return LlamaCppModel(spec(name="base"))


@pytest.fixture(scope="module")
def lora(tmp_path_factory, default_gguf) -> Path:
    # 0.1, not 0.08: at 0.08 the random adapter's greedy text first left the base's after ~15 tokens when
    # evaluated in one batch and ~18 under prefix reuse's chunking, so 20 tokens could not tell them apart
    # (its logits differ by ~7 on both paths: tests/test_prefix_reuse.py)
    return random_lora_for(default_gguf, tmp_path_factory.mktemp("lora") / "lora.gguf", scale=0.1)


def test_stream_yields_text_and_usage(base):
    stream = base.stream(HELLO, Sampling(max_tokens=24, seed=5))
    chunks = list(stream)
    assert len(chunks) > 1
    assert "".join(chunks) == stream.text and stream.text.strip()
    assert stream.usage.prompt_tokens == base.count_tokens(HELLO)
    assert 0 < stream.usage.completion_tokens <= 24
    assert stream.usage.seed == 5
    assert stream.usage.finish_reason in {"length", "stop"}


def test_same_seed_same_text_different_seed_differs(base):
    sampling = Sampling(temperature=0.9, max_tokens=30, seed=123)
    first = base.complete(HELLO, sampling)
    assert base.complete(HELLO, sampling) == first
    others = {base.complete(HELLO, sampling.merged(seed=s)) for s in (1, 2, 3)}
    assert others - {first}, "three other seeds all reproduced the same text"


def test_unseeded_runs_record_the_seed_they_used(base):
    stream = base.stream(HELLO, Sampling(temperature=0.9, max_tokens=16))
    text = "".join(stream)
    assert stream.usage.seed is not None
    assert base.complete(HELLO, Sampling(temperature=0.9, max_tokens=16, seed=stream.usage.seed)) == text


def test_prompt_uses_the_chat_template_from_the_gguf(base):
    rendered = base._formatter(messages=[m.to_dict() for m in HELLO]).prompt
    assert "<|im_start|>user" in rendered and rendered.rstrip().endswith("<|im_start|>assistant")


def test_json_schema_constrains_output(base):
    schema = {
        "type": "object",
        "properties": {"mood": {"type": "string"}, "score": {"type": "integer", "minimum": 1, "maximum": 10}},
        "required": ["mood", "score"],
    }
    raw = base.complete_json([Message("user", "Rate your mood as JSON.")], schema, Sampling(max_tokens=60, seed=2))
    parsed = json.loads(raw)
    assert set(parsed) == {"mood", "score"} and isinstance(parsed["score"], int)


def test_adapter_changes_output_and_shares_the_base_weights(base, lora):
    tuned = LlamaCppModel(spec(name="tuned", adapter=str(lora)))
    greedy = Sampling(temperature=0.0, max_tokens=20, seed=0)
    before = base.complete(HELLO, greedy)
    assert tuned.shared is base.shared, "the tuned model loaded a second copy of the weights"
    assert tuned.complete(HELLO, greedy) != before
    assert base.complete(HELLO, greedy) == before, "the adapter leaked into the base model's context"
    info = tuned.info()
    assert info.adapter_sha256 and len(info.adapter_sha256) == 64 and info.weights_sha256 == base.info().weights_sha256


def test_two_threads_on_one_model_use_separate_contexts(base):
    sampling = Sampling(temperature=0.8, max_tokens=20, seed=9)
    prompts = [HELLO, [Message("user", "Describe a calm beach.")]]
    expected = [base.complete(p, sampling) for p in prompts]
    results: list[str | None] = [None, None]

    def run(i: int) -> None:
        results[i] = base.complete(prompts[i], sampling)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_adapter_for_another_base_is_refused(tmp_path, default_gguf):
    architecture, shapes = gguf_tensor_shapes(default_gguf)
    name = next(n for n in shapes if n.endswith("attn_q.weight"))
    out_features, in_features = shapes[name]
    wrong = {name: (np.zeros((4, in_features + 64)), np.zeros((out_features, 4)))}
    path = write_gguf_lora(tmp_path / "wrong.gguf", wrong, alpha=4, architecture=architecture)
    with pytest.raises(AdapterMismatch, match="does not fit"):
        LlamaCppModel(spec(adapter=str(path)))


def test_missing_adapter_says_not_built(tmp_path):
    with pytest.raises(ModelNotFound, match="adapter not built yet"):
        LlamaCppModel(spec(adapter=str(tmp_path / "nope.gguf")))


def test_missing_weights_file(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        LlamaCppModel(spec(weights=str(tmp_path / "missing.gguf")))


def test_non_gguf_file_is_refused(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 not found</html>")
    with pytest.raises(InvalidWeights, match="not a GGUF"):
        LlamaCppModel(spec(weights=str(fake)))


def test_truncated_gguf_is_refused(tmp_path, default_gguf):
    truncated = tmp_path / "truncated.gguf"
    with default_gguf.open("rb") as source:
        truncated.write_bytes(source.read(3_000_000))
    with pytest.raises(InvalidWeights, match="truncated"):
        LlamaCppModel(spec(weights=str(truncated)))


def long_conversation(turns: int) -> list[Message]:
    messages = []
    for i in range(turns):
        messages.append(Message("user", f"Turn {i}: " + "I keep thinking about everything that went wrong. " * 12))
        messages.append(Message("assistant", "That sounds hard. Tell me more about it. " * 6))
    messages.append(Message("user", "What should I do now?"))
    return messages


def test_context_guard_refuses_by_default():
    model = LlamaCppModel(spec(name="small-ctx", n_ctx=512))
    with pytest.raises(ContextOverflow, match="trim"):
        model.complete(long_conversation(8), Sampling(max_tokens=32, seed=1))


def test_context_guard_trims_oldest_turns_when_asked():
    model = LlamaCppModel(spec(name="small-ctx-trim", n_ctx=512, context_policy="trim"))
    conversation = [Message("system", "You are kind."), *long_conversation(8)]
    stream = model.stream(conversation, Sampling(max_tokens=32, seed=1))
    assert "".join(stream).strip()
    assert stream.usage.trimmed_messages >= 2
    assert stream.usage.prompt_tokens + 32 <= 512


def fake_hub_cache(cache: Path, repo: str, filename: str, source: Path) -> None:
    """The layout huggingface_hub writes after a download: refs/main -> snapshots/<commit>/<file>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copyfile(source, snapshot / filename)


def test_hf_reference_resolves_through_huggingface_hub(tmp_path, monkeypatch, default_gguf):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    fake_hub_cache(tmp_path, "TTahir/Demo_CBT", "demo.Q4_1.gguf", default_gguf)
    path = resolve_weights("hf:TTahir/Demo_CBT:demo.Q4_1.gguf")
    assert path.name == "demo.Q4_1.gguf" and path.stat().st_size == default_gguf.stat().st_size
    model = LlamaCppModel(spec(name="from-hub", weights="hf:TTahir/Demo_CBT:demo.Q4_1.gguf"))
    assert model.complete(HELLO, Sampling(max_tokens=8, seed=1)).strip()
    with pytest.raises(ModelNotFound, match="not cached"):
        resolve_weights("hf:TTahir/Other_CBT:missing.gguf")
    with pytest.raises(ModelNotFound, match="hf:owner/repo:file.gguf"):
        resolve_weights("hf:just-a-name")
