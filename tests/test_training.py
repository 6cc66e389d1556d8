"""LoRA training on a tiny synthetic slice: the therapist-only mask, real TRL steps, GGUF export checked
against PEFT numerically and in llama.cpp, refusals, and readable errors for bad input."""

from __future__ import annotations

import ctypes
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cbtcompare.models.base import ModelNotFound, ModelSpec, Sampling
from training.config import ConfigError, TrainConfig
from training.train_lora import (
    DatasetError,
    TrainingError,
    build_examples,
    check_dataset,
    choose_placement,
    encode_with_assistant_mask,
    file_sha256,
    gguf_as_transformers_folder,
    prepare_run_dir,
    read_log,
    render,
    resolve_base_model,
    run_training,
    session_windows,
)

SYSTEM = "You are a CBT practice assistant. You can be wrong and cannot help in a crisis."
# A tiny slice written for these tests: synthetic, short, in the shape PROTOCOL.md describes.
SESSIONS = [
    [
        ("user", "Hi. I have felt flat for weeks and I keep cancelling plans with friends."),
        ("assistant", "Thanks for coming. Shall we set an agenda: how the week went, then the cancelled plans?"),
        ("user", "Yes. I cancelled dinner on Friday because I thought I would be boring."),
        ("assistant", "What went through your mind just before you cancelled?"),
        ("user", "That they only invite me out of pity."),
        ("assistant", "What evidence do you have for and against that thought? For homework, could you note it?"),
    ],
    [
        ("user", "Last week's summary: I noticed the pity thought twice and wrote it down."),
        ("assistant", "Well done for noticing it. What would you like to put on today's agenda?"),
        ("user", "Work. I froze in a meeting and my manager looked annoyed."),
        ("assistant", "How sure are you, from zero to one hundred, that she was annoyed with you?"),
        ("user", "Maybe sixty. She might have been tired."),
        ("assistant", "To summarise: you froze, guessed she was annoyed, then found another reason. How was today?"),
    ],
    [
        ("user", "I went for a short walk three times this week, like we planned."),
        ("assistant", "That is real progress. How did your mood change before and after each walk?"),
        ("user", "A little better after, maybe from three to five out of ten."),
        ("assistant", "So activity lifted your mood. Could you schedule two more walks and rate your mood again?"),
    ],
]


def write_sessions(path: Path, sessions: list[list[tuple[str, str]]] = SESSIONS) -> Path:
    lines = []
    for index, turns in enumerate(sessions, start=1):
        record = {
            "id": f"tiny-s{index:02d}",
            "profile_id": "tiny",
            "session_index": index,
            "phase": "assessment",
            "messages": [{"role": "system", "content": SYSTEM}] + [{"role": r, "content": c} for r, c in turns],
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def messages_of(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}] + [{"role": r, "content": c} for r, c in turns]


@pytest.fixture(scope="session")
def base_folder(default_gguf: Path) -> Path:
    """The default GGUF as a transformers folder (built once, then cached)."""
    return gguf_as_transformers_folder(default_gguf)


@pytest.fixture(scope="session")
def tokenizer(base_folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_folder))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_sessions(tmp_path_factory.mktemp("data") / "tiny.jsonl")


# --- the therapist-only mask ---------------------------------------------------------------------------------


def test_mask_covers_every_therapist_turn_and_no_patient_or_system_token(tokenizer):
    messages = messages_of(SESSIONS[0])
    ids, mask = encode_with_assistant_mask(tokenizer, messages)
    assert len(ids) == len(mask) and sum(mask) > 0
    text = render(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert encoded["input_ids"] == ids
    # Character spans of system and patient content: no masked token may touch them.
    forbidden, cursor = [], 0
    for message in messages:
        start = text.index(message["content"], cursor)
        cursor = start + len(message["content"])
        if message["role"] != "assistant":
            forbidden.append((start, cursor))
    for (start, end), bit in zip(encoded["offset_mapping"], mask, strict=True):
        if bit:
            assert not any(start < f_end and f_start < end for f_start, f_end in forbidden), text[start:end]
    # What is learned is exactly each therapist turn followed by the end-of-turn token.
    learned = tokenizer.decode([t for t, bit in zip(ids, mask, strict=True) if bit])
    expected = "".join(m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant")
    assert learned == expected


def test_sessions_are_cut_into_windows_of_whole_exchanges_that_fit(tokenizer):
    messages = messages_of(SESSIONS[0])
    windows = session_windows(tokenizer, messages, max_seq_len=90)
    assert len(windows) > 1
    for window in windows:
        assert window[0] == messages[0]  # every window keeps the system prompt
        assert [m["role"] for m in window[1:]] == ["user", "assistant"] * ((len(window) - 1) // 2)
    assert [m for w in windows for m in w[1:]] == messages[1:]  # nothing lost, nothing repeated, in order
    examples, stats = build_examples([{"messages": messages}], tokenizer, 4096)
    assert stats.examples == 1 and stats.therapist_tokens == sum(examples[0]["assistant_masks"])


# --- bad input ---------------------------------------------------------------------------------------------


def _record(*turns: tuple[str, str]) -> str:
    return json.dumps({"id": "bad", "messages": [{"role": r, "content": c} for r, c in turns]})


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"id": "a", "messages": [', "not valid JSON"),
        (_record(("system", SYSTEM), ("patient", "hi"), ("assistant", "hello")), "role 'patient'"),
        (_record(("user", "hi"), ("assistant", " ")), "empty therapist turn"),
        (_record(("assistant", "hi"), ("user", "x")), "expected a patient"),
    ],
)
def test_bad_sessions_are_refused_with_the_line_number(tmp_path, tokenizer, line, needle):
    path = write_sessions(tmp_path / "bad.jsonl", SESSIONS[:1])
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DatasetError) as caught:
        check_dataset(path, tokenizer, context_length=8192)
    assert "line 2" in str(caught.value) and needle in str(caught.value)


def test_sessions_longer_than_the_context_and_missing_files_are_refused(tmp_path, tokenizer, tiny_dataset):
    with pytest.raises(DatasetError, match="over the 60-token context"):
        check_dataset(tiny_dataset, tokenizer, context_length=60)
    with pytest.raises(DatasetError, match="does not exist"):
        check_dataset(tmp_path / "nope.jsonl", tokenizer, context_length=8192)
    examples_too_short = [{"messages": messages_of(SESSIONS[0])}]
    with pytest.raises(DatasetError, match="raise max_seq_len"):
        build_examples(examples_too_short, tokenizer, max_seq_len=24)


def test_unknown_base_models_and_impossible_settings_are_named():
    with pytest.raises(ModelNotFound, match="unknown base model 'no-such-model'"):
        resolve_base_model("no-such-model")
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_base_model("/nowhere/model.gguf")
    with pytest.raises(ConfigError, match="lora_r"):
        TrainConfig(lora_r=0).check()
    with pytest.raises(ConfigError, match="unknown setting"):
        TrainConfig.from_dict({"lora_rank": 8})
    with pytest.raises(ConfigError, match="embeddings or lm_head"):
        TrainConfig(target_modules=["q_proj", "lm_head"]).check()
    with pytest.raises(TrainingError, match="CUDA"):
        choose_placement(TrainConfig(qlora=True))


# --- real training steps -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset, base_folder) -> dict:
    """Two real SFTTrainer steps on the tiny slice, exported and published into a scratch adapters folder."""
    root = tmp_path_factory.mktemp("training")
    config = TrainConfig(
        name="tiny-cbt", dataset=str(tiny_dataset), max_steps=2, max_seq_len=160, learning_rate=5e-3,
        save_steps=1, runs_dir=str(root / "runs"), adapters_dir=str(root / "adapters"),
    )
    run_dir = prepare_run_dir(config)
    result = run_training(config, run_dir)
    return {"config": config, "run_dir": run_dir, "result": result, "root": root}


@pytest.mark.slow
def test_two_steps_write_the_adapter_log_and_manifest(trained, tiny_dataset, default_gguf):
    result, run_dir = trained["result"], trained["run_dir"]
    assert result.status == "completed" and result.steps == 2
    assert np.isfinite(result.final_loss)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()
    records = read_log(run_dir / "train_log.jsonl")
    steps = [r for r in records if r["event"] == "step"]
    assert [s["step"] for s in steps] == [1, 2]
    for step in steps:
        assert step["loss"] > 0 and step["lr"] is not None and step["epoch"] > 0 and step["tokens_per_s"] > 0
    assert records[-1]["event"] == "end" and records[-1]["status"] == "completed"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["dataset"]["sha256"] == file_sha256(tiny_dataset)
    assert manifest["base_model"]["sha256"] == file_sha256(default_gguf)
    assert manifest["final_loss"] == pytest.approx(steps[-1]["loss"], rel=1e-4)
    assert manifest["config"]["max_steps"] == 2 and manifest["hardware"]["precision"] == "fp32"
    assert manifest["code_version"]
    published = Path(result.published)
    assert published == trained["root"] / "adapters" / "tiny-cbt"
    assert {p.name for p in published.iterdir()} >= {"adapter.gguf", "adapter_config.json",
                                                      "adapter_model.safetensors", "manifest.json", "README.md"}
    assert not [p for p in published.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_the_gguf_adapter_changes_llamacpp_output(trained):
    from cbtcompare.models.llamacpp import LlamaCppModel
    from training.jobs import adapter_spec

    spec = adapter_spec(Path(trained["result"].published))
    assert spec.backend == "llamacpp" and spec.weights == "embedded:smollm2"
    tuned = LlamaCppModel(spec.model_copy(update={"system_prompt": None}))
    base = LlamaCppModel(ModelSpec(name="base", backend="llamacpp", weights="embedded:smollm2"))
    from cbtcompare.models.base import Message

    messages = [Message("system", SYSTEM), Message("user", "I cancelled plans again because I felt boring.")]
    greedy = Sampling(temperature=0.0, max_tokens=24, seed=1)
    assert tuned.complete(messages, greedy) != base.complete(messages, greedy)


def _llamacpp_logits(gguf: Path, ids: list[int], adapter: Path | None) -> np.ndarray:
    import llama_cpp

    llama = llama_cpp.Llama(model_path=str(gguf), n_ctx=256, logits_all=True, verbose=False)
    if adapter is not None:
        handle = llama_cpp.llama_adapter_lora_init(llama.model, str(adapter).encode())
        assert handle
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
        assert llama_cpp.llama_set_adapters_lora(llama._ctx.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) == 0
    llama.eval(ids)
    return np.array(llama.scores[: len(ids)])


@pytest.mark.slow
def test_export_follows_peft_numerically_including_the_qk_permutation(trained, tmp_path, base_folder, default_gguf,
                                                                      tokenizer, monkeypatch):
    """A LoRA on q_proj/k_proj only: llama.cpp's logit shift must match PEFT's, and not without the permutation."""
    import torch
    from peft import PeftModel
    from safetensors.numpy import load_file, save_file
    from transformers import AutoModelForCausalLM

    import training.export_gguf as export

    adapter = tmp_path / "qk"
    shutil.copytree(trained["run_dir"] / "adapter", adapter)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    rng = np.random.default_rng(0)
    for key, value in weights.items():
        if "lora_B" in key:
            qk = "q_proj" in key or "k_proj" in key
            weights[key] = rng.normal(0, 0.2, value.shape).astype(np.float32) if qk else np.zeros_like(value)
    save_file(weights, str(adapter / "adapter_model.safetensors"))

    ids = tokenizer(render(tokenizer, messages_of(SESSIONS[0])[:2], generation_prompt=True),
                    add_special_tokens=False)["input_ids"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_folder)), str(adapter)).eval()
    with torch.no_grad():
        tuned = model(torch.tensor([ids])).logits[0].numpy()
        with model.disable_adapter():
            plain = model(torch.tensor([ids])).logits[0].numpy()
    peft_shift = (tuned - plain).ravel()
    base_logits = _llamacpp_logits(default_gguf, ids, None)

    right = export.export_adapter(adapter, tmp_path / "right.gguf", default_gguf)
    assert right.permuted == 2 * 30 and right.tensors == 7 * 30
    shift = (_llamacpp_logits(default_gguf, ids, right.path) - base_logits).ravel()
    assert np.corrcoef(peft_shift, shift)[0, 1] > 0.9

    monkeypatch.setattr(export, "PERMUTED_QK_ARCHITECTURES", set())
    wrong = export.export_adapter(adapter, tmp_path / "wrong.gguf", default_gguf)
    wrong_shift = (_llamacpp_logits(default_gguf, ids, wrong.path) - base_logits).ravel()
    assert np.corrcoef(peft_shift, wrong_shift)[0, 1] < 0.5


# --- refusals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"modules_to_save": ["lm_head"]}, "lm_head"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, "embeddings or lm_head"),
        ({"trainable_token_indices": {"embed_tokens": [5]}}, "embeddings"),
        ({"use_dora": True}, "DoRA"),
    ],
)
def test_export_refuses_adapters_llamacpp_cannot_carry(tmp_path, default_gguf, change, needle):
    from training.export_gguf import ExportRefused, export_adapter

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], **change}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    from safetensors.numpy import save_file

    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 576), np.float32),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((576, 4), np.float32)},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(ExportRefused, match=needle):
        export_adapter(adapter, tmp_path / "out.gguf", default_gguf)
    assert not (tmp_path / "out.gguf").exists()


def test_export_refuses_embedding_lora_weights_and_foreign_bases(tmp_path, default_gguf):
    from safetensors.numpy import save_file

    from training.export_gguf import ExportRefused, export_adapter

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                             "target_modules": ["q_proj"]}))
    save_file({"base_model.model.model.embed_tokens.lora_embedding_A": np.zeros((4, 49152), np.float32)},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(ExportRefused, match="embeddings or lm_head"):
        export_adapter(adapter, tmp_path / "out.gguf", default_gguf)
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 4096), np.float32),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((4096, 4), np.float32)},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(ExportRefused, match="trained on another base"):
        export_adapter(adapter, tmp_path / "out.gguf", default_gguf)
