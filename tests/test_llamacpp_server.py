"""The scale-out path: docs/scale-out.md's models-file entries load, and the llama.cpp server entries run
against a real OpenAI-compatible server (llama-cpp-python's own, serving the default GGUF) with the
cache hints in the request and the reply streamed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from fixtures_servers import FaultProxy

from cbtcompare.models.base import Message, ModelSpec, Sampling
from cbtcompare.models.openai_compat import OpenAICompatModel, cache_hints, served_model_id
from cbtcompare.models.registry import Registry, load_spec_file
from cbtcompare.paths import REPO_ROOT

RECIPES = REPO_ROOT / "docs" / "scale-out.md"
ASK = [Message("system", "You are a supportive listener."), Message("user", "I could not sleep last night.")]


def recipe_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", RECIPES.read_text(encoding="utf-8"), flags=re.DOTALL)


def recipe_specs(tmp_path: Path) -> dict[str, ModelSpec]:
    specs = {}
    for index, block in enumerate(recipe_blocks()):
        path = tmp_path / f"recipe{index}.yaml"
        path.write_text(block, encoding="utf-8")
        specs.update({spec.name: spec for spec in load_spec_file(path)})
    return specs


def test_every_recipe_in_the_scale_out_doc_is_a_valid_models_file(tmp_path):
    specs = recipe_specs(tmp_path)
    assert len(recipe_blocks()) == 2 and len(specs) == 4
    vllm_tuned, llama_tuned = specs["llama31-cbt-vllm"], specs["smollm2-cbt-llama-server"]
    assert vllm_tuned.adapter == "cbt", "an endpoint's adapter is a model id, not a path under the repository"
    assert served_model_id(vllm_tuned) == "cbt" and served_model_id(specs["llama31-instruct-vllm"]).endswith("Instruct")
    assert cache_hints(vllm_tuned, ASK) == {}
    assert served_model_id(llama_tuned) == "smollm2"
    assert cache_hints(llama_tuned, ASK)["lora"] == [{"id": 0, "scale": 1.0}]
    assert "lora" not in cache_hints(specs["smollm2-llama-server"], ASK)
    for spec in specs.values():
        assert OpenAICompatModel.unavailable_reason(spec) is None, spec.name


def test_a_conversation_keeps_its_slot_and_slots_spread(tmp_path):
    spec = recipe_specs(tmp_path)["smollm2-llama-server"]
    first = cache_hints(spec, ASK)
    assert first["cache_prompt"] is True and first["id_slot"] in range(spec.server_slots)
    later = [*ASK, Message("assistant", "That sounds hard."), Message("user", "Yes, again tonight.")]
    assert cache_hints(spec, later)["id_slot"] == first["id_slot"], "a later turn moved to another slot"
    openings = [[Message("system", "You are kind."), Message("user", f"Patient {i} here.")] for i in range(40)]
    assert {cache_hints(spec, o)["id_slot"] for o in openings} == set(range(spec.server_slots))


def test_a_bad_llama_server_lora_reference_is_reported():
    spec = ModelSpec(name="x", backend="openai", server="llamacpp", weights="m", adapter="lora:first",
                     base_url="http://127.0.0.1:9/v1")  # fmt: skip
    assert "write lora:N" in (OpenAICompatModel.unavailable_reason(spec) or "")


@pytest.mark.slow
def test_the_llama_server_recipe_streams_with_cache_hints(tmp_path, llama_server, monkeypatch):
    proxy = FaultProxy(llama_server.base_url)
    try:
        monkeypatch.setenv("CBTCOMPARE_TEST_LLAMA_SERVER_KEY", llama_server.api_key)
        entries = yaml.safe_load(recipe_blocks()[1])["models"]
        for entry in entries:
            entry.update(base_url=proxy.base_url, api_key_env="CBTCOMPARE_TEST_LLAMA_SERVER_KEY")
        models = tmp_path / "models.yaml"
        models.write_text(yaml.safe_dump({"models": entries}), encoding="utf-8")
        registry = Registry.from_files(models)
        model = registry.load("smollm2-llama-server")
        conversation = list(ASK)
        for seed in (3, 4):
            stream = model.stream(conversation, Sampling(temperature=0.7, max_tokens=16, seed=seed))
            chunks = list(stream)
            assert len(chunks) > 1, "the reply did not arrive as a stream"
            assert stream.usage.seed == seed and stream.usage.finish_reason in ("stop", "length")
            conversation += [Message("assistant", stream.text), Message("user", "Tell me more.")]
        bodies = proxy.posts()
        assert [b["stream"] for b in bodies] == [True, True]
        assert all(b["cache_prompt"] is True and b["model"] == "smollm2" for b in bodies)
        assert bodies[0]["id_slot"] == bodies[1]["id_slot"] and "lora" not in bodies[0]
        assert bodies[1]["messages"][:2] == bodies[0]["messages"], "the second turn does not extend the first"

        tuned = registry.load("smollm2-cbt-llama-server")
        assert tuned.complete(ASK, Sampling(max_tokens=8, seed=1)).strip()
        assert proxy.posts()[-1]["lora"] == [{"id": 0, "scale": 1.0}]
        registry.close()
    finally:
        proxy.close()
