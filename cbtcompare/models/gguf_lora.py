"""Write a LoRA adapter as a GGUF file that llama.cpp loads over a base model (llama_adapter_lora_init).

Tensor names are the base's GGUF names plus `.lora_a` / `.lora_b`; A is (r, in) and B is (out, r) in
PyTorch order (the gguf writer reverses them into ggml's order). Converting a PEFT adapter's names into
GGUF names is the exporter's job (training/export_gguf.py); this module only writes the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_gguf_lora(
    path: Path, tensors: dict[str, tuple[np.ndarray, np.ndarray]], *, alpha: float, architecture: str
) -> Path:
    """Write `{base_tensor_name: (A, B)}` as a GGUF LoRA; written to a temporary name, then renamed."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for name, (lora_a, lora_b) in sorted(tensors.items()):
        if lora_a.shape[0] != lora_b.shape[1]:
            raise ValueError(f"{name}: A is {lora_a.shape} and B is {lora_b.shape}; their ranks differ")
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(lora_a, dtype=np.float32))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(lora_b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(partial, path)
    return path


def gguf_tensor_shapes(path: Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """A GGUF model's architecture and its tensors' shapes in PyTorch order (out, in)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields["general.architecture"]
    architecture = bytes(field.parts[field.data[0]]).decode("utf-8")
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    return architecture, shapes


def random_lora_for(
    base: Path,
    out: Path,
    *,
    rank: int = 8,
    scale: float = 0.05,
    seed: int = 0,
    targets: tuple[str, ...] = ("attn_q", "attn_v"),
) -> Path:
    """A random LoRA over `base`'s attention projections: for tests and benchmarks, not for use."""
    architecture, shapes = gguf_tensor_shapes(base)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in shapes.items():
        if name.endswith(".weight") and any(f".{t}." in name for t in targets) and len(shape) == 2:
            out_features, in_features = shape
            tensors[name.removesuffix(".weight") + ".weight"] = (
                rng.normal(0, scale, (rank, in_features)),
                rng.normal(0, scale, (out_features, rank)),
            )
    return write_gguf_lora(out, tensors, alpha=rank, architecture=architecture)
