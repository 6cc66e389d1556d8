"""The training configuration: one pydantic model whose fields carry their own help text, loaded from YAML.

A run is described completely by a `TrainConfig` (saved as config.yaml in its run folder), so a run can be
repeated or resumed from that file alone. Presets live in training/configs/. This module only describes
and checks settings: it never loads a model, reads a dataset or starts training.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cbtcompare.config_errors import format_validation_error
from cbtcompare.paths import REPO_ROOT

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
ADAPTER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Modules whose LoRA would change the vocabulary side of the model: llama.cpp's LoRA loader and our GGUF
# export do not carry them, and a chat adapter has no need of them.
FORBIDDEN_TARGETS = ("embed_tokens", "lm_head", "wte", "wpe", "embed_out", "word_embeddings")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class ConfigError(ValueError):
    """A setting that cannot work, with the field named and what to write instead."""


# Whole-number settings are counts, sizes or seeds: anything larger is a typo, and would overflow the C
# integers of torch, numpy or the tokenizer with an OverflowError instead of a message.
MAX_WHOLE_NUMBER = 2**31 - 1
MAX_SEED = 2**32 - 1


class TrainConfig(BaseModel):
    """Everything one LoRA / QLoRA run needs. Field help is shown by `python -m training.train_lora --help-config`.

    Values are coerced by each field's type (YAML reads `2e-4` as text; it becomes the float 2e-4); a value
    that cannot be read as its type is a ConfigError naming the field.
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    name: str = Field(
        "smollm2-135m-cbt",
        description="adapter name: the folder under adapters/ and the registry name it is published as",
    )
    base_model: str = Field(
        "embedded:smollm2",
        description=(
            "the model to adapt: a registry name (smollm2-instruct), embedded:smollm2, a .gguf file (dequantised "
            "to full precision), a transformers folder, or a Hugging Face Hub id (owner/name)"
        ),
    )
    dataset: str = Field(
        "training/data/cbt_synthetic/sessions.jsonl",
        description="messages-JSONL file, one session per line (training/data/PROTOCOL.md); relative to the repo",
    )
    lora_r: int = Field(16, description="LoRA rank")
    lora_alpha: float = Field(32, description="LoRA alpha; the update is scaled by alpha / r")
    lora_dropout: float = Field(0.05, description="dropout on the LoRA input during training")
    target_modules: list[str] = Field(
        default_factory=lambda: list(ALL_LINEAR),
        description="linear layers that get a LoRA (never embeddings or lm_head)",
    )
    learning_rate: float = Field(2e-4, description="peak learning rate (AdamW)")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name: cosine, linear...")
    warmup_ratio: float = Field(0.03, description="share of the steps spent warming the rate up")
    weight_decay: float = Field(0.0, description="AdamW weight decay")
    num_train_epochs: float = Field(1.0, description="passes over the data (ignored when max_steps > 0)")
    max_steps: int = Field(-1, description="optimizer steps to run; -1 means use num_train_epochs")
    per_device_train_batch_size: int = Field(1, description="examples per device per forward pass")
    gradient_accumulation_steps: int = Field(1, description="forward passes per optimizer step")
    max_seq_len: int = Field(
        512,
        description=(
            "tokens per training example: sessions are cut into windows of whole patient/therapist exchanges, "
            "each starting with the system prompt, that fit this length"
        ),
    )
    seed: int = Field(42, description="seed for LoRA initialisation, dropout and data order")
    save_steps: int = Field(20, description="write a resumable checkpoint every this many steps")
    logging_steps: int = Field(1, description="write a line to the training log every this many steps")
    qlora: bool = Field(False, description="load the base in 4-bit NF4 with bitsandbytes (needs a CUDA GPU)")
    gradient_checkpointing: bool = Field(
        False, description="trade compute for memory (recompute activations in the backward pass)"
    )
    precision: Precision = Field(
        "auto",
        description="auto: bf16 on CUDA GPUs that support it, fp16 on older GPUs, fp32 on the CPU",
    )
    system_prompt: str | None = Field(
        "therapist_cbt",
        description="prompt file (cbtcompare/prompts) the published model spec uses as its system turn",
    )
    base_gguf: str | None = Field(
        None,
        description=(
            "a GGUF of the same base for the llama.cpp export (path, embedded:smollm2 or hf:owner/repo:file.gguf); "
            "empty: the base itself when it is a GGUF, else the adapter is published as PEFT only"
        ),
    )
    publish: bool = Field(True, description="publish the finished adapter to adapters/<name>/")
    overwrite: bool = Field(False, description="replace an adapter already published under this name")
    adapters_dir: str | None = Field(None, description="where adapters are published (default adapters/)")
    runs_dir: str | None = Field(None, description="where run folders go (default <data dir>/runs)")

    # --- loading and saving -----------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = set(cls.model_fields)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            config = cls(**values)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source, values)) from exc
        config.check(source)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        path = resolve_config_path(path)
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc)[:300]}") from exc
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected a mapping of setting: value")
        return cls.from_dict({**document, **(overrides or {})}, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # --- checks -----------------------------------------------------------------------------------------------

    def check(self, source: str = "config") -> None:
        """Refuse settings that cannot work, naming the field."""

        def fail(name: str, message: str) -> None:
            raise ConfigError(f"{source}: {name}: {message}")

        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            limit = MAX_SEED if name == "seed" else MAX_WHOLE_NUMBER
            if info.annotation is int and abs(value) > limit:
                fail(name, f"{value} is too large; use a whole number of at most {limit}")
            if info.annotation is float and not math.isfinite(value):
                fail(name, f"must be a finite number; got {value}")
        if self.seed < 0:
            fail("seed", f"must be zero or positive; got {self.seed}")
        if not ADAPTER_NAME.match(self.name):
            fail("name", f"{self.name!r} must be lowercase letters, digits, '.', '_' or '-' (at most 64)")
        if not self.base_model.strip():
            fail("base_model", "is empty; name a registry model, a GGUF file, a folder or a Hub id")
        if not self.dataset.strip():
            fail("dataset", "is empty; point it at a messages-JSONL file")
        if self.lora_r < 1:
            fail("lora_r", f"must be at least 1; got {self.lora_r}")
        if self.lora_alpha <= 0:
            fail("lora_alpha", f"must be positive; got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            fail("lora_dropout", f"must be in [0, 1); got {self.lora_dropout}")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            fail("target_modules", "list at least one linear layer name, e.g. q_proj")
        forbidden = [m for m in self.target_modules if any(word in m for word in FORBIDDEN_TARGETS)]
        if forbidden:
            fail(
                "target_modules",
                f"{', '.join(forbidden)} would train the embeddings or lm_head, which llama.cpp adapters cannot "
                "carry; target the attention and MLP projections only",
            )
        if self.learning_rate <= 0:
            fail("learning_rate", f"must be positive; got {self.learning_rate}")
        if self.max_steps == 0 or self.max_steps < -1:
            fail("max_steps", f"must be -1 (use epochs) or a positive number; got {self.max_steps}")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            fail("num_train_epochs", f"must be positive when max_steps is -1; got {self.num_train_epochs}")
        if not 0 <= self.warmup_ratio < 1:
            fail("warmup_ratio", f"must be in [0, 1); got {self.warmup_ratio}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                fail(name, f"must be at least 1; got {getattr(self, name)}")
        if self.max_seq_len < 64:
            fail("max_seq_len", f"must be at least 64 tokens; got {self.max_seq_len}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            fail("precision", f"{self.precision!r}: use auto, fp32, bf16 or fp16")

    # --- paths ------------------------------------------------------------------------------------------------

    def dataset_path(self) -> Path:
        return repo_path(self.dataset)

    def adapters_path(self) -> Path:
        from cbtcompare.paths import ADAPTERS_DIR

        return repo_path(self.adapters_dir) if self.adapters_dir else ADAPTERS_DIR

    def runs_path(self) -> Path:
        from cbtcompare.paths import data_dir

        return repo_path(self.runs_dir) if self.runs_dir else data_dir() / "runs"


def repo_path(value: str) -> Path:
    """A path as written when absolute, else read against the repository root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def resolve_config_path(value: str | Path) -> Path:
    """A config file path, or a preset name (`smollm2-135m-cpu`) in training/configs/."""
    path = Path(value).expanduser()
    candidates = [path, REPO_ROOT / path, CONFIGS_DIR / path, CONFIGS_DIR / f"{value}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no config file {value}; presets: {', '.join(preset_names())}")


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def field_help() -> dict[str, str]:
    """Each setting's help text, for the CLI and the Train tab."""
    return {name: info.description or "" for name, info in TrainConfig.model_fields.items()}


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from the command line; the value is read as YAML (numbers, booleans, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: write key=value, e.g. --set max_steps=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    if key.strip() in {"name", "base_model", "dataset", "system_prompt", "base_gguf"} and value is not None:
        value = raw  # always text, even when it looks like a number
    return key.strip(), value
