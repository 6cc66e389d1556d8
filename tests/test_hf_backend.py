"""The transformers + PEFT backend on the real SmolLM2 GGUF (read through transformers' gguf_file), on the CPU.

The base is loaded once for the module; LoRA adapters are built with PEFT in a tmp folder (random, so they
change the output), over a freshly initialised model of the same shape, never over the shared base.
KV prefix reuse across turns is on (the default) unless a test turns it off.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from transformers import PretrainedConfig

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from cbtcompare.models.base import (  # noqa: E402
    AdapterMismatch,
    BackendUnavailable,
    ContextOverflow,
    InvalidWeights,
    Message,
    ModelError,
    ModelNotFound,
    ModelSpec,
    Sampling,
)
from cbtcompare.models.hf import HFModel, LoadedBase, loaded_bases  # noqa: E402
from cbtcompare.models.hf_cache import PREFIX_CHUNK_TOKENS  # noqa: E402
from cbtcompare.models.weights import sha256_of  # noqa: E402

pytestmark = pytest.mark.slow

HELLO = [Message("user", "I keep thinking I will fail my exam. What can I do?")]
GREEDY = Sampling(temperature=0.0, max_tokens=12)
SEEDED = Sampling(temperature=0.9, top_p=0.95, max_tokens=12, seed=1234)
REUSE_ENV = "CBTCOMPARE_PREFIX_REUSE"
SYSTEM = "You are a supportive CBT therapist. Answer in one or two short sentences and ask one question. " * 4
PATIENT_TURNS = [
    "I have been feeling low for weeks and I can't sleep.",
    "Mostly at night. I lie awake thinking about work.",
    "That I'm going to be fired because I'm not good enough.",
    "My manager said my last report had mistakes.",
    'I tell myself "you always mess things up".',
    "I could write down what actually happened at work.",
]


def hf_spec(name: str, weights: Path | str, **fields: object) -> ModelSpec:
    return ModelSpec(name=name, backend="hf", weights=str(weights), **fields)


def make_lora(folder: Path, config_overrides: dict[str, int] | None = None, *, base_config: PretrainedConfig) -> Path:
    """A random LoRA on q_proj/v_proj, built with PEFT over a fresh model of the given shape."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = base_config.__class__.from_dict({**base_config.to_dict(), **(config_overrides or {})})
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with warnings.catch_warnings():  # PEFT reads a transformers attribute deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        get_peft_model(model, lora).save_pretrained(str(folder), save_embedding_layers=False)
    return folder


@pytest.fixture(autouse=True)
def prefix_reuse_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REUSE_ENV, raising=False)  # reuse is the default


def converse(model: HFModel, turns: int = len(PATIENT_TURNS)) -> tuple[list[str], list[int]]:
    """A seeded therapy conversation; returns the replies and the prompt tokens each turn took from a cache."""
    messages = [Message("system", SYSTEM)]
    replies, reused = [], []
    for turn, text in enumerate(PATIENT_TURNS[:turns]):
        messages.append(Message("user", text))
        stream = model.stream(messages, Sampling(temperature=0.8, top_p=0.95, max_tokens=8, seed=100 + turn))
        reply = "".join(stream)
        replies.append(reply)
        reused.append(stream.usage.cached_prompt_tokens)
        messages.append(Message("assistant", reply))
    return replies, reused


def shared_base_of(model: HFModel) -> LoadedBase:
    (shared,) = [b for b in loaded_bases() if b.model is model.base_model]
    return shared


@pytest.fixture(scope="module")
def base(default_gguf: Path) -> Iterator[HFModel]:
    # One intra-op thread: on a shared 2-core runner, torch's spinning worker threads make a 135M model ~10x
    # slower under load, and a model this small gains little from a second thread. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = HFModel(hf_spec("hf-smollm2", default_gguf))
    yield model
    model.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_reply(base: HFModel) -> str:
    """The base's greedy reply, taken before any adapter is loaded; every later base reply must equal it."""
    return base.complete(HELLO, GREEDY)


@pytest.fixture(scope="module")
def tiny_folder(base: HFModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Llama saved as a transformers folder, with SmolLM2's tokenizer and chat template."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    config = LlamaConfig(
        vocab_size=len(base.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        bos_token_id=base.tokenizer.bos_token_id,
        eos_token_id=base.tokenizer.eos_token_id,
    )
    torch.manual_seed(3)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
    base.tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def lora_folder(base: HFModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora(tmp_path_factory.mktemp("lora") / "smollm2-random-lora", base_config=base.base_model.config)


@pytest.fixture(scope="module")
def tuned(base: HFModel, lora_folder: Path, default_gguf: Path) -> Iterator[HFModel]:
    model = HFModel(hf_spec("hf-smollm2-lora", default_gguf, adapter=str(lora_folder)))
    yield model
    model.close()


def test_streams_a_seeded_reply_with_usage(base: HFModel) -> None:
    stream = base.stream(HELLO, SEEDED)
    chunks = list(stream)
    again = base.complete(HELLO, SEEDED)

    assert len(chunks) > 1, "the reply should arrive in several chunks"
    assert stream.text.strip() and stream.text == again
    assert stream.usage.prompt_tokens == base.count_tokens(HELLO)
    assert 0 < stream.usage.completion_tokens <= SEEDED.max_tokens
    assert stream.usage.finish_reason in {"length", "stop"}
    assert stream.usage.seed == SEEDED.seed
    assert base.complete(HELLO, SEEDED.merged(seed=99)) != again, "another seed should give other text"


def test_chat_template_comes_from_the_gguf_or_a_jinja_file(base: HFModel, default_gguf: Path, tmp_path: Path) -> None:
    assert base.render(HELLO).startswith("<|im_start|>")
    assert base.render(HELLO).endswith("<|im_start|>assistant\n")

    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] ")
    custom = HFModel(hf_spec("hf-plain-template", default_gguf, chat_template=str(template)))
    try:
        assert custom.base_model is base.base_model
        assert custom.render(HELLO) == f"[user] {HELLO[0].content}\n[assistant] "
        assert custom.count_tokens(HELLO) < base.count_tokens(HELLO)
    finally:
        custom.close()


def test_stop_strings_cut_the_reply(base: HFModel, base_reply: str) -> None:
    full = base_reply
    words = full.split()
    assert len(words) >= 3, full
    stop = words[len(words) // 2]
    stream = base.stream(HELLO, GREEDY.merged(stop=(stop,)))
    cut = "".join(stream)

    assert cut == full[: full.index(stop)]
    assert stream.usage.finish_reason == "stop"


def test_adapter_shares_the_base_and_switches_on_and_off(base: HFModel, base_reply: str, tuned: HFModel) -> None:
    before = base_reply
    with_adapter = tuned.complete(HELLO, GREEDY)
    after = base.complete(HELLO, GREEDY)

    assert tuned.base_model is base.base_model
    assert id(tuned.base_model) == id(base.base_model)
    assert len([b for b in loaded_bases() if b.model is base.base_model]) == 1
    assert with_adapter != before, "a random LoRA must change the greedy reply"
    assert after == before, "the base spec must not see the adapter"


def test_base_and_tuned_in_parallel_match_sequential(base: HFModel, base_reply: str, tuned: HFModel) -> None:
    expected = {"base": base_reply, "tuned": tuned.complete(HELLO, GREEDY)}
    results: dict[str, list[str]] = {"base": [], "tuned": []}

    def run(label: str, model: HFModel) -> None:
        results[label].append(model.complete(HELLO, GREEDY))

    threads = [threading.Thread(target=run, args=item) for item in (("base", base), ("tuned", tuned))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {label: [text] for label, text in expected.items()}


def test_abandoned_stream_frees_the_base(base: HFModel) -> None:
    stream = base.stream(HELLO, Sampling(temperature=0.0, max_tokens=400))
    first = next(iter(stream))
    stream.close()
    assert first

    done: list[str] = []
    thread = threading.Thread(target=lambda: done.append(base.complete(HELLO, GREEDY)))
    thread.start()
    thread.join(timeout=60)
    assert done, "generation after an abandoned stream should not wait for the abandoned one to finish"


def test_loads_a_transformers_folder(base: HFModel, tiny_folder: Path) -> None:
    tiny = HFModel(hf_spec("hf-tiny", tiny_folder))
    try:
        stream = tiny.stream(HELLO, SEEDED.merged(max_tokens=5))
        text = "".join(stream)
        assert tiny.base_model is not base.base_model
        assert tiny.base_model.config.hidden_size == 64
        assert tiny.render(HELLO) == base.render(HELLO), "the saved tokenizer keeps SmolLM2's chat template"
        assert stream.usage.completion_tokens == 5 and stream.usage.finish_reason == "length"
        assert text == tiny.complete(HELLO, SEEDED.merged(max_tokens=5))
        assert tiny.info().weights == str(tiny_folder) and tiny.info().weights_sha256 is None
    finally:
        tiny.close()
    assert all(b.model is not tiny.base_model for b in loaded_bases()), "the last user's close frees the base"


def test_registry_lists_and_loads_hf_specs(base: HFModel, default_gguf: Path, tmp_path: Path) -> None:
    from cbtcompare.models.registry import Registry

    registry = Registry(
        [hf_spec("hf-registry", default_gguf), hf_spec("hf-unbuilt", default_gguf, adapter=str(tmp_path / "nope"))]
    )
    try:
        assert registry.availability("hf-registry").available
        unbuilt = registry.availability("hf-unbuilt")
        assert not unbuilt.available and "adapter not built yet" in unbuilt.reason
        assert registry.load("hf-registry").base_model is base.base_model
    finally:
        registry.close()
    assert base.complete(HELLO, GREEDY.merged(max_tokens=3)), "closing the registry's model keeps the shared base"


def test_info_records_weights_and_adapter_hashes(base: HFModel, tuned: HFModel, default_gguf: Path) -> None:
    assert base.info().weights_sha256 == sha256_of(default_gguf)
    assert base.info().adapter_sha256 is None
    info = tuned.info()
    assert info.backend == "hf" and info.weights_sha256 == sha256_of(default_gguf)
    assert info.adapter_sha256 == sha256_of(Path(info.adapter) / "adapter_model.safetensors")
    assert info.n_ctx == min(tuned.spec.n_ctx, tuned.base_model.config.max_position_embeddings)


def test_context_guard_uses_the_tokenizer(base: HFModel, default_gguf: Path) -> None:
    small = HFModel(hf_spec("hf-small-context", default_gguf, n_ctx=128))
    try:
        with pytest.raises(ContextOverflow, match="tokens"):
            small.complete([Message("user", "worry " * 200)], GREEDY)
    finally:
        small.close()


def test_missing_weights_and_adapters_are_typed_errors(base: HFModel, default_gguf: Path, tmp_path: Path) -> None:
    missing_folder = hf_spec("hf-missing", tmp_path / "no-such-model")
    assert "does not exist" in (HFModel.unavailable_reason(missing_folder) or "")
    with pytest.raises(ModelNotFound, match="does not exist"):
        HFModel(missing_folder)

    missing_adapter = hf_spec("hf-no-adapter", default_gguf, adapter=str(tmp_path / "no-adapter"))
    assert "adapter not built yet" in (HFModel.unavailable_reason(missing_adapter) or "")
    with pytest.raises(ModelNotFound, match="adapter not built yet"):
        HFModel(missing_adapter)

    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    with pytest.raises(InvalidWeights, match="config.json"):
        HFModel(hf_spec("hf-empty", not_a_model))

    config_only = tmp_path / "config-only"
    config_only.mkdir()
    base.base_model.config.to_json_file(str(config_only / "config.json"))
    with pytest.raises(InvalidWeights, match="no weights"):
        HFModel(hf_spec("hf-config-only", config_only))

    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    with pytest.raises(InvalidWeights, match="not a GGUF"):
        HFModel(hf_spec("hf-text", not_gguf))

    offline_hub = hf_spec("hf-hub", "nobody-cbtcompare/not-a-cached-model")
    with pytest.raises(ModelNotFound, match="hf download"):
        HFModel(offline_hub)

    assert HFModel.unavailable_reason(hf_spec("hf-ok", default_gguf)) is None


def test_adapter_for_another_base_is_refused_and_leaves_the_base_untouched(
    base: HFModel, base_reply: str, default_gguf: Path, tmp_path: Path
) -> None:
    from peft.tuners.lora import LoraLayer

    before = base_reply
    (shared,) = [b for b in loaded_bases() if b.model is base.base_model]
    adapters_before, users_before = shared.peft and sorted(shared.peft.peft_config), shared.users
    smaller = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 1}
    folder = make_lora(tmp_path / "other-base-lora", {**smaller, "head_dim": 16}, base_config=base.base_model.config)

    with pytest.raises(AdapterMismatch, match=r"does not fit .*q_proj has 576 inputs"):
        HFModel(hf_spec("hf-wrong-lora", default_gguf, adapter=str(folder)))

    assert (shared.peft and sorted(shared.peft.peft_config)) == adapters_before
    if adapters_before is None:
        assert not any(isinstance(m, LoraLayer) for m in base.base_model.modules())
    assert shared.users == users_before
    assert base.complete(HELLO, GREEDY) == before


def test_six_turns_reusing_the_prefix_give_the_text_of_fresh_evaluation(
    base: HFModel, tuned: HFModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same seed + same settings, adapter off and on: the same replies whether each turn evaluates the whole
    conversation (reuse off) or takes the previous turns' keys and values from the cache."""
    replies = {}
    for label, model in (("base", base), ("tuned", tuned)):
        monkeypatch.setenv(REUSE_ENV, "0")
        fresh, fresh_reused = converse(model)
        monkeypatch.delenv(REUSE_ENV)
        cached, cached_reused = converse(model)
        assert set(fresh_reused) == {0}, f"{label}: reuse off must evaluate every prompt whole"
        assert all(n >= PREFIX_CHUNK_TOKENS for n in cached_reused[1:]), f"{label}: {cached_reused}"
        assert cached == fresh, label
        replies[label] = cached
    assert replies["base"] != replies["tuned"], "the random LoRA must change the conversation"
    held = {adapter for adapter, _ in shared_base_of(base).prefixes.held()}
    assert None in held and len(held) >= 2, "each adapter setting keeps its own cache"


def test_parallel_conversations_keep_their_own_prefixes(base: HFModel, tuned: HFModel) -> None:
    expected = {"base": converse(base, 3)[0], "tuned": converse(tuned, 3)[0]}
    results: dict[str, list[str]] = {}
    threads = [
        threading.Thread(target=lambda label=label, model=model: results.update({label: converse(model, 3)[0]}))
        for label, model in (("base", base), ("tuned", tuned))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert results == expected


def test_reuse_off_keeps_no_cache(base: HFModel, monkeypatch: pytest.MonkeyPatch) -> None:
    store = shared_base_of(base).prefixes
    store.clear()
    monkeypatch.setenv(REUSE_ENV, "0")
    converse(base, 2)
    assert store.held() == []
    monkeypatch.delenv(REUSE_ENV)
    converse(base, 1)
    assert [adapter for adapter, _ in store.held()] == [None]


def test_closing_a_model_frees_its_caches(
    base: HFModel, lora_folder: Path, default_gguf: Path, tiny_folder: Path
) -> None:
    store = shared_base_of(base).prefixes
    converse(base, 1)
    before = {adapter for adapter, _ in store.held()}
    scaled = HFModel(hf_spec("hf-cache-lora", default_gguf, adapter=str(lora_folder), adapter_scale=0.25))
    converse(scaled, 1)
    added = {adapter for adapter, _ in store.held()} - before
    assert len(added) == 1 and None not in added, store.held()
    scaled.close()
    assert not added & {adapter for adapter, _ in store.held()}, "the adapter's caches went with it"
    assert None in {adapter for adapter, _ in store.held()}, "the open base spec keeps its own"

    tiny = HFModel(hf_spec("hf-tiny-cache", tiny_folder))
    converse(tiny, 1)
    tiny_store = shared_base_of(tiny).prefixes
    assert tiny_store.held(), "a long prompt leaves a cache"
    tiny.close()
    assert tiny_store.held() == [], "the last user's close frees the base's caches"


def test_closing_adapter_users_restores_the_plain_base(
    base: HFModel, base_reply: str, tuned: HFModel, lora_folder: Path, default_gguf: Path
) -> None:
    """Runs last among the CPU tests: it closes the module's tuned model."""
    from peft.tuners.lora import LoraLayer

    tuned_reply = tuned.complete(HELLO, GREEDY)
    scaled = HFModel(hf_spec("hf-scaled-lora", default_gguf, adapter=str(lora_folder), adapter_scale=0.5))
    scaled_reply = scaled.complete(HELLO, GREEDY)
    scaled.close()  # one of two adapters goes: the other one keeps working
    assert scaled_reply not in {base_reply, tuned_reply}
    assert tuned.complete(HELLO, GREEDY) == tuned_reply

    tuned.close()  # the last adapter goes: the PEFT layers leave the shared base
    assert not any(isinstance(m, LoraLayer) for m in base.base_model.modules())
    assert base.complete(HELLO, GREEDY) == base_reply
    with pytest.raises(ModelError, match="closed"):
        tuned.complete(HELLO, GREEDY)


def test_four_bit_without_cuda_is_refused_with_the_reason(tiny_folder: Path, default_gguf: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here; the 4-bit load itself is tested by test_four_bit_on_cuda")
    assert "GGUF" in (HFModel.unavailable_reason(hf_spec("hf-4bit-gguf", default_gguf, quantization="4bit")) or "")
    spec = hf_spec("hf-4bit", tiny_folder, quantization="4bit")
    assert "CUDA" in (HFModel.unavailable_reason(spec) or "")
    with pytest.raises(BackendUnavailable, match="needs a CUDA GPU"):
        HFModel(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="4-bit bitsandbytes loading needs a CUDA GPU; none here")
def test_four_bit_on_cuda(tiny_folder: Path) -> None:
    pytest.importorskip("bitsandbytes", reason="4-bit loading needs bitsandbytes")
    full = HFModel(hf_spec("hf-tiny-full", tiny_folder))
    quantized = HFModel(hf_spec("hf-tiny-4bit", tiny_folder, quantization="4bit"))
    try:
        assert quantized.base_model is not full.base_model, "4-bit and full precision are separate bases"
        assert quantized.base_model.is_loaded_in_4bit and quantized.base_model.device.type == "cuda"
        short = SEEDED.merged(max_tokens=5)
        assert quantized.complete(HELLO, short) == quantized.complete(HELLO, short)
    finally:
        quantized.close()
        full.close()
