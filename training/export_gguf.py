"""Export a PEFT LoRA adapter as a GGUF LoRA adapter that llama.cpp applies over a base GGUF.

`python -m training.export_gguf ADAPTER_DIR --base BASE.gguf [--out adapter.gguf]`

PEFT names (base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight) become the base's GGUF names
(blk.3.attn_q.weight.lora_a) through gguf's own tensor-name map for the base's architecture. For
architectures whose HF -> GGUF conversion permutes the Q and K rows for llama.cpp's rotary layout
(llama, which includes Mistral), the rows of lora_B for q_proj / k_proj are permuted the same way, as
llama.cpp's convert_lora_to_gguf.py does: (W + s.B.A) permuted by rows = perm(W) + s.perm(B).A.
Every tensor's shape is checked against the base GGUF. The LoRA scale stays alpha / r as in PEFT
(rsLoRA's alpha / sqrt(r) is folded into B).

It refuses adapters llama.cpp cannot carry: ones that train embeddings or lm_head (modules_to_save,
embedding LoRA, trainable tokens), DoRA, and per-module alphas. It never modifies the PEFT adapter and
writes the GGUF to a temporary name first (cbtcompare.models.gguf_lora).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cbtcompare.models.gguf_lora import write_gguf_lora
from training.config import FORBIDDEN_TARGETS

LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[\w-]+)?\.weight$")
# Architectures whose convert_hf_to_gguf.py permutes attn_q / attn_k rows (LlamaModel.permute).
PERMUTED_QK_ARCHITECTURES = {"llama"}


class ExportRefused(ValueError):
    """An adapter that cannot be exported as a llama.cpp LoRA, with the reason and what to do instead."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    architecture: str
    tensors: int
    rank: int
    alpha: float
    permuted: int


def _gguf_field(reader: object, key: str) -> object | None:
    field = reader.fields.get(key)  # type: ignore[attr-defined]
    if field is None:
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8")
    return value.tolist()[0] if hasattr(value, "tolist") else value


def base_gguf_facts(base: Path) -> tuple[str, dict[str, tuple[int, ...]], int, int | None, int | None]:
    """(architecture, tensor shapes, block count, head count, kv head count) of a base GGUF (read once per file)."""
    stat = base.stat()
    return _gguf_facts(str(base.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _gguf_facts(path: str, size: int, mtime_ns: int) -> tuple[str, dict[str, tuple[int, ...]], int, int | None,
                                                              int | None]:
    import gguf

    reader = gguf.GGUFReader(path)
    architecture = str(_gguf_field(reader, "general.architecture"))
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    blocks = _gguf_field(reader, f"{architecture}.block_count")
    heads = _gguf_field(reader, f"{architecture}.attention.head_count")
    kv_heads = _gguf_field(reader, f"{architecture}.attention.head_count_kv")
    return architecture, shapes, int(blocks or 0), heads, kv_heads  # type: ignore[arg-type]


def permute_rows(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute, applied to the output rows of a (out, ...) matrix."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def check_exportable(config: dict) -> None:
    """Refuse adapter configs llama.cpp's LoRA loader cannot reproduce."""
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ExportRefused(f"only LoRA adapters can be exported; this one is {config.get('peft_type')}")
    if config.get("modules_to_save"):
        raise ExportRefused(
            f"this adapter also trains full copies of {', '.join(config['modules_to_save'])} (modules_to_save); a "
            "llama.cpp LoRA cannot carry changed embeddings or lm_head. Retrain without modules_to_save"
        )
    if config.get("trainable_token_indices"):
        raise ExportRefused(
            "this adapter trains token embeddings (trainable_token_indices); a llama.cpp LoRA cannot carry changed "
            "embeddings. Retrain without added tokens"
        )
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    vocab = [t for t in targets if any(word in t for word in FORBIDDEN_TARGETS)]
    if vocab:
        raise ExportRefused(
            f"this adapter puts a LoRA on {', '.join(vocab)}, i.e. it changes the embeddings or lm_head, which a "
            "llama.cpp LoRA cannot carry; retrain targeting the attention and MLP projections only"
        )
    if config.get("use_dora"):
        raise ExportRefused("DoRA adapters cannot be exported to llama.cpp; retrain with use_dora: false")
    if config.get("alpha_pattern"):
        raise ExportRefused("per-module alphas (alpha_pattern) cannot be exported; llama.cpp uses one alpha")


def export_adapter(adapter_dir: Path, out: Path, base_gguf: Path) -> ExportReport:
    """Write `out` (a GGUF LoRA) from the PEFT adapter in `adapter_dir`, checked against `base_gguf`."""
    import gguf
    from safetensors.numpy import load_file

    config_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise ExportRefused(
            f"{adapter_dir} is not a PEFT adapter folder (it needs adapter_config.json and adapter_model.safetensors)"
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    check_exportable(config)
    weights = load_file(str(weights_path))
    architecture, shapes, blocks, heads, kv_heads = base_gguf_facts(base_gguf)
    arch_ids = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    if architecture not in arch_ids:
        raise ExportRefused(f"{base_gguf.name} has architecture {architecture!r}, which the gguf package does not know")
    name_map = gguf.get_tensor_name_map(arch_ids[architecture], blocks)

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in weights.items():
        if "lora_embedding" in key or any(f".{word}." in key for word in ("embed_tokens", "lm_head")):
            raise ExportRefused(
                f"the adapter holds {key}: it changes the embeddings or lm_head, which a llama.cpp LoRA cannot "
                "carry; retrain targeting the attention and MLP projections only"
            )
        match = LORA_KEY.match(key)
        if not match:
            raise ExportRefused(f"unexpected tensor {key} in the adapter; only lora_A / lora_B weights can be exported")
        pairs.setdefault(match["module"], {})[match["part"]] = tensor.astype(np.float32)

    alpha = float(config.get("lora_alpha", config.get("r", 8)))
    default_rank = int(config.get("r", 8))
    rslora = bool(config.get("use_rslora"))
    tensors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    permuted = 0
    for module, parts in sorted(pairs.items()):
        if set(parts) != {"A", "B"}:
            raise ExportRefused(f"{module} has lora_{''.join(parts)} but not both lora_A and lora_B")
        gguf_name = name_map.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise ExportRefused(f"no GGUF tensor for {module} in the {architecture} tensor map")
        if gguf_name.split(".")[0] in ("token_embd", "output"):
            raise ExportRefused(f"{module} maps to {gguf_name}, the embeddings or lm_head; a llama.cpp LoRA cannot "
                                "carry that")
        if gguf_name not in shapes:
            raise ExportRefused(
                f"{base_gguf.name} has no tensor {gguf_name} (for {module}); the adapter was trained on another base"
            )
        lora_a, lora_b = parts["A"], parts["B"]
        out_features, in_features = shapes[gguf_name]
        if lora_a.shape[1] != in_features or lora_b.shape[0] != out_features:
            raise ExportRefused(
                f"{module}: the adapter's A {lora_a.shape} and B {lora_b.shape} do not fit {gguf_name} "
                f"{(out_features, in_features)} of {base_gguf.name}; it was trained on another base model"
            )
        rank = lora_a.shape[0]
        if rslora:  # PEFT scales by alpha / sqrt(r); llama.cpp by alpha / r
            lora_b = lora_b * (math.sqrt(rank))
        if architecture in PERMUTED_QK_ARCHITECTURES and heads:
            if gguf_name.endswith("attn_q.weight"):
                lora_b, permuted = permute_rows(lora_b, heads, heads), permuted + 1
            elif gguf_name.endswith("attn_k.weight"):
                lora_b, permuted = permute_rows(lora_b, heads, kv_heads), permuted + 1
        tensors[gguf_name] = (lora_a, lora_b)
    if not tensors:
        raise ExportRefused(f"{adapter_dir} holds no LoRA weights")
    path = write_gguf_lora(out, tensors, alpha=alpha, architecture=architecture)
    return ExportReport(path, architecture, len(tensors), default_rank, alpha, permuted)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_gguf", description=__doc__.splitlines()[0])
    parser.add_argument("adapter", type=Path, help="a PEFT adapter folder (adapter_config.json + safetensors)")
    parser.add_argument("--base", required=True, help="the base GGUF (a path, embedded:smollm2 or hf:owner/repo:file)")
    parser.add_argument("--out", type=Path, help="output file (default ADAPTER/adapter.gguf)")
    args = parser.parse_args(argv)
    from cbtcompare.models.base import ModelError
    from cbtcompare.models.weights import resolve_weights

    try:
        base = resolve_weights(args.base)
        report = export_adapter(args.adapter, args.out or args.adapter / "adapter.gguf", base)
    except (ExportRefused, ModelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.path}: {report.tensors} LoRA tensors ({report.architecture}, r={report.rank}, "
        f"alpha={report.alpha}, {report.permuted} Q/K permuted)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
