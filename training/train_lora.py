"""LoRA / QLoRA fine-tuning of a chat model on therapist turns only: TRL's SFTTrainer with a PEFT LoRA.

`python -m training.train_lora --config smollm2-135m-cpu [--set key=value ...] [--run-dir DIR] [--resume]`
runs one training job in this process (also under `accelerate launch` for several GPUs). A run folder
holds config.yaml, train_log.jsonl (one JSON object per line: events and per-step loss, lr, tokens/s),
checkpoints/ (resumable), adapter/ (the PEFT adapter), adapter.gguf (llama.cpp LoRA, when the base is a
GGUF) and manifest.json. A finished adapter is published to adapters/<name>/ through a temporary folder
and a rename. SIGTERM (or Ctrl-C) stops after the current step, saves a checkpoint and the adapter, and
logs `aborted`; `--resume` continues from the last complete checkpoint, never past max_steps.

Loss: chat templates such as SmolLM2's carry no {% generation %} markers, so the assistant mask is built
here: each therapist turn's content and its end-of-turn token are marked (1), system and patient tokens
are not (0); TRL turns the mask into labels (-100 elsewhere).

This module never runs inside the web server's process (training/jobs.py starts it as a subprocess),
never writes into adapters/ except by that final rename, and never trains the embeddings or lm_head.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cbtcompare.content_hash import content_digest
from cbtcompare.models.base import ModelError, ModelNotFound, ModelSpec
from cbtcompare.paths import REPO_ROOT
from training.checkpoints import checkpoint_state, last_complete_checkpoint, set_aside_incomplete
from training.config import ConfigError, TrainConfig, field_help, parse_override
from training.staging import clean_partial_outputs, move_into_place, staging_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LOG_NAME = "train_log.jsonl"
MANIFEST_NAME = "manifest.json"
CONFIG_NAME = "config.yaml"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
BASE_CACHE_FORMAT = 1
START_EFFECT, END_EFFECT = "<!-- adapter_effect:start -->", "<!-- adapter_effect:end -->"

Status = Literal["completed", "aborted", "failed"]


class TrainingError(RuntimeError):
    """A run that cannot go on, with a message a person can act on."""


class DatasetError(TrainingError):
    """The dataset is missing or invalid; the message carries the validator's report."""


# --- the run log ---------------------------------------------------------------------------------------------


class RunLog:
    """Append-only JSONL log of one run; every line is flushed so a reader (and a SIGKILL) sees whole lines."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        self._lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, default=str)
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The log's records; a torn last line (a process killed mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# --- the base model ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModelSource:
    """Where the base weights come from, decided before anything is loaded."""

    reference: str  # as the user wrote it
    weights: str  # the weights reference a published registry spec uses (embedded:smollm2, a path, a Hub id)
    kind: Literal["gguf", "folder", "hub"]
    location: str  # a GGUF file, a folder, or a Hub id

    @property
    def gguf(self) -> Path | None:
        return Path(self.location) if self.kind == "gguf" else None


def resolve_base_model(reference: str) -> BaseModelSource:
    """A registry name, embedded:smollm2, a GGUF file, a transformers folder or a Hub id; ModelNotFound otherwise."""
    from cbtcompare.models.hf import locate_weights
    from cbtcompare.models.registry import Registry, backend_capabilities

    weights = reference
    registry = Registry.from_files()
    if reference in registry.names():
        spec = registry.spec(reference)
        if not backend_capabilities(spec.backend).trainable:
            raise ModelNotFound(
                f"{reference} is an API model ({spec.backend}); training needs local weights: name a GGUF or "
                "transformers model"
            )
        weights = spec.weights
    try:
        source = locate_weights(ModelSpec(name=reference, backend="hf", weights=weights), download=True)
    except ModelError as exc:
        known = ", ".join(n for n in registry.names() if backend_capabilities(registry.spec(n).backend).trainable)
        raise ModelNotFound(
            f"unknown base model {reference!r}: {exc}. Use a registry model ({known}), embedded:smollm2, a .gguf "
            "file, a transformers folder or a Hub id (owner/name)"
        ) from exc
    return BaseModelSource(reference=reference, weights=weights, kind=source.kind, location=source.location)


def base_cache_root() -> Path:
    configured = os.environ.get("CBTCOMPARE_CACHE_DIR")
    root = Path(configured) if configured else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (root if configured else root / "cbtcompare") / "bases"


def gguf_as_transformers_folder(gguf: Path) -> Path:
    """A transformers folder holding the GGUF dequantised to fp32, built once per GGUF (keyed by its sha256).

    transformers dequantises a GGUF on every load (tens of seconds here); the folder loads in about a second.
    It is written to a temporary name and renamed, so concurrent runs never see half a folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cbtcompare.models.weights import sha256_of

    digest = sha256_of(gguf)
    folder = base_cache_root() / f"{digest[:24]}-v{BASE_CACHE_FORMAT}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    clean_partial_outputs(folder.parent)
    partial = staging_dir(folder.parent, folder.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # the weights are plain fp32 tensors now; nothing is quantised
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(partial))
        tokenizer.save_pretrained(str(partial))
        (partial / "source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}), encoding="utf-8")
        try:
            os.rename(partial, folder)
        except OSError:  # another run finished the same folder first
            shutil.rmtree(partial, ignore_errors=True)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return folder


@dataclass(frozen=True)
class Placement:
    device: Literal["cuda", "cpu"]
    precision: Literal["fp32", "bf16", "fp16"]


def choose_placement(config: TrainConfig) -> Placement:
    """bf16 on CUDA GPUs that support it, fp16 on older GPUs, fp32 on the CPU (bf16 is emulated there: ~10x slower)."""
    import torch

    cuda = torch.cuda.is_available()
    if config.qlora and not cuda:
        raise TrainingError(
            "QLoRA (qlora: true) loads the base in 4-bit with bitsandbytes, which needs a CUDA GPU, and torch sees "
            "none; set qlora: false to train in full precision on the CPU (small models only)"
        )
    if config.precision == "auto":
        if cuda:
            return Placement("cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16")
        return Placement("cpu", "fp32")
    if config.precision == "fp16" and not cuda:
        raise TrainingError("precision fp16 needs a CUDA GPU; use auto or fp32 on the CPU")
    return Placement("cuda" if cuda else "cpu", config.precision)


def load_base(
    source: BaseModelSource, config: TrainConfig, placement: Placement
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.kind == "gguf":
        if config.qlora:
            raise TrainingError(
                "QLoRA needs a transformers folder or Hub id as base_model: a GGUF is dequantised to full precision "
                "by transformers; name the original model (e.g. HuggingFaceTB/SmolLM2-135M-Instruct)"
            )
        folder = str(gguf_as_transformers_folder(Path(source.location)))
    else:
        folder = source.location
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[placement.precision]
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.qlora:
        from accelerate import PartialState
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
        kwargs["device_map"] = {"": PartialState().local_process_index}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(
            f"could not load the base model {source.reference} from {folder}: {str(exc).splitlines()[0]}; check the "
            "name, or download it where the Hub is reachable and point base_model at the folder"
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return model, tokenizer


def base_fingerprint(source: BaseModelSource) -> str | None:
    """sha256 of the GGUF, or of the weight files of a folder (a digest of their digests); None for a Hub id."""
    from cbtcompare.models.weights import sha256_of

    if source.kind == "gguf":
        return sha256_of(Path(source.location))
    if source.kind == "folder":
        folder = Path(source.location)
        parts = [
            f"{p.name}:{sha256_of(p)}"
            for p in sorted(folder.iterdir())
            if p.suffix in {".safetensors", ".bin", ".json"} and p.is_file()
        ]
        return content_digest("\n".join(parts), length=None)
    return None


def model_context_length(model: PreTrainedModel) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 2048)


# --- the data: sessions -> windows -> token ids + assistant mask ---------------------------------------------


def render(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], generation_prompt: bool = False
) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def assistant_char_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], text: str
) -> list[tuple[int, int]]:
    """Character spans of `text` (the rendered conversation) that the model should learn to write.

    Each span is one therapist turn's content plus the template's end-of-turn marker (e.g. `<|im_end|>`),
    so the model learns to stop. Found by rendering the conversation up to each assistant turn (with the
    generation prompt) and through it; templates that re-render earlier turns (some put the system prompt
    into the last user turn) fall back to finding each content in order.
    """
    spans: list[tuple[int, int]] = []
    consistent = True
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:index], generation_prompt=True)
        through = render(tokenizer, messages[: index + 1])
        if not (text.startswith(through) and through.startswith(before) and through[len(before):].startswith(
            message["content"]
        )):
            consistent = False
            break
        spans.append((len(before), len(through.rstrip())))
    if consistent:
        return spans
    spans, cursor = [], 0
    eos = tokenizer.eos_token or ""
    for message in messages:
        if message["role"] != "assistant":
            continue
        start = text.find(message["content"], cursor)
        if start < 0:
            raise TrainingError("the chat template changes the therapist turns' text; cannot build the loss mask")
        end = start + len(message["content"])
        if eos and text.startswith(eos, end):
            end += len(eos)
        spans.append((start, end))
        cursor = end
    return spans


def encode_with_assistant_mask(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]
) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and a 0/1 mask marking the therapist's tokens (content + end of turn)."""
    text = render(tokenizer, messages)
    spans = assistant_char_spans(tokenizer, messages, text)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    mask = []
    span_index = 0
    for start, end in encoded["offset_mapping"]:
        while span_index < len(spans) and spans[span_index][1] <= start:
            span_index += 1
        inside = span_index < len(spans) and spans[span_index][0] <= start < end <= spans[span_index][1]
        mask.append(1 if inside else 0)
    return ids, mask


@dataclass
class DataStats:
    sessions: int = 0
    examples: int = 0
    tokens: int = 0
    therapist_tokens: int = 0
    truncated_examples: int = 0
    dropped_examples: int = 0
    longest_example: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def session_windows(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], max_seq_len: int
) -> list[list[dict[str, str]]]:
    """Cut a session into windows of whole patient/therapist exchanges that fit `max_seq_len` tokens.

    Every window starts with the session's system message (when it has one), so training sees the prompt
    the published model runs with. An exchange longer than the limit on its own becomes its own window
    and is truncated by the trainer (counted in the run's manifest).
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system):])
    exchanges = [turns[i : i + 2] for i in range(0, len(turns), 2)]

    def length(window: Sequence[dict[str, str]]) -> int:
        return len(tokenizer(render(tokenizer, window), add_special_tokens=False)["input_ids"])

    header = length(system) if system else 0
    windows: list[list[dict[str, str]]] = []
    current: list[dict[str, str]] = []
    used = header
    for exchange in exchanges:
        cost = length([*system, *exchange]) - header
        if current and used + cost > max_seq_len:
            windows.append([*system, *current])
            current, used = [], header
        current.extend(exchange)
        used += cost
    if current:
        windows.append([*system, *current])
    return windows


def read_sessions(path: Path) -> list[dict[str, Any]]:
    """The sessions of a dataset the validator has passed (lines split as the validator splits them)."""
    from training.validate import jsonl_lines, parse_line

    sessions = []
    for number, line in enumerate(jsonl_lines(path.read_bytes().decode("utf-8")), start=1):
        if line.strip():
            record, problem = parse_line(line)
            if problem:
                raise DatasetError(f"{path}: line {number}: {problem}")
            sessions.append(record)
    return sessions


def check_dataset(path: Path, tokenizer: PreTrainedTokenizerBase, context_length: int) -> dict[str, Any]:
    """Run the dataset validator (schema, roles, alternation, empty turns, length vs the context, duplicates).

    Raises DatasetError with the validator's report (line numbers) when the file cannot be trained on.
    """
    from training.validate import validate_file

    if not path.is_file():
        raise DatasetError(f"dataset {path} does not exist; point dataset at a messages-JSONL file")

    def count_tokens(messages: Sequence[Any]) -> int:
        rendered = render(tokenizer, [m.to_dict() for m in messages])
        return len(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    report = validate_file(path, max_tokens=context_length, count_tokens=count_tokens)
    if not report.ok:
        raise DatasetError(f"the dataset cannot be used for training:\n{report.format(limit=20)}")
    return dict(report.counts)


def build_examples(
    sessions: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_seq_len: int
) -> tuple[list[dict[str, list[int]]], DataStats]:
    """Pre-tokenised examples (`input_ids`, `assistant_masks`) as TRL's SFTTrainer accepts them."""
    stats = DataStats(sessions=len(sessions))
    examples = []
    shortest_needed = 0
    for session in sessions:
        for window in session_windows(tokenizer, session["messages"], max_seq_len):
            ids, mask = encode_with_assistant_mask(tokenizer, window)
            stats.longest_example = max(stats.longest_example, len(ids))
            if len(ids) > max_seq_len:  # one exchange longer than the limit: keep its start
                stats.truncated_examples += 1
                ids, mask = ids[:max_seq_len], mask[:max_seq_len]
            if not any(mask):
                stats.dropped_examples += 1
                shortest_needed = max(shortest_needed, stats.longest_example)
                continue
            stats.examples += 1
            stats.tokens += len(ids)
            stats.therapist_tokens += sum(mask)
            examples.append({"input_ids": ids, "assistant_masks": mask})
    if not examples:
        if stats.dropped_examples:
            raise DatasetError(
                f"max_seq_len {max_seq_len} leaves no room for a therapist turn after the system prompt and the "
                f"patient's turn (a window needs up to {shortest_needed} tokens); raise max_seq_len"
            )
        raise DatasetError("the dataset holds no therapist turns to learn from")
    return examples, stats


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- trainer callbacks ---------------------------------------------------------------------------------------


class StopFlag:
    """Set by SIGTERM / SIGINT; the trainer checks it after every step."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None

    def install(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.signal_name = signal.Signals(signum).name
            self.event.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)

    @property
    def is_set(self) -> bool:
        return self.event.is_set()


def make_callbacks(log: RunLog, stop: StopFlag) -> list[Any]:
    from transformers import TrainerCallback

    class LogToJsonl(TrainerCallback):
        """One JSONL line per logging step: step, loss, lr, epoch, grad norm, tokens/s."""

        def __init__(self) -> None:
            self.last_time = time.perf_counter()
            self.last_tokens = 0

        def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.last_time = time.perf_counter()
            self.last_tokens = state.num_input_tokens_seen
            log.write("train_begin", step=state.global_step, max_steps=state.max_steps,
                      epochs=args.num_train_epochs)

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            logs = logs or {}
            if "train_loss" in logs:  # the summary the trainer logs once, after the last step
                log.write("train_end", step=state.global_step, runtime_s=_number(logs.get("train_runtime")),
                          mean_loss=_number(logs["train_loss"]))
                return
            if "loss" not in logs:
                return
            now = time.perf_counter()
            tokens = state.num_input_tokens_seen
            rate = (tokens - self.last_tokens) / (now - self.last_time) if now > self.last_time else None
            self.last_time, self.last_tokens = now, tokens
            log.write(
                "step",
                step=state.global_step,
                max_steps=state.max_steps,
                loss=_number(logs["loss"]),
                lr=_number(logs.get("learning_rate")),
                epoch=_number(logs.get("epoch", state.epoch)),
                grad_norm=_number(logs.get("grad_norm")),
                tokens_per_s=round(rate, 1) if rate else None,
                tokens_seen=tokens,
            )

        def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            log.write("checkpoint", step=state.global_step,
                      path=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))

    class StopOnSignal(TrainerCallback):
        """After the step in flight: save a checkpoint and stop (abort that still saves)."""

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if _any_rank(stop.is_set, args.device):
                control.should_save = True
                control.should_training_stop = True
            return control

    return [LogToJsonl(), StopOnSignal()]


def _number(value: object, digits: int = 6) -> float | None:
    try:
        return round(float(value), digits)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def sft_arguments(config: TrainConfig, placement: Placement, output_dir: Path) -> Any:
    """TRL's SFTConfig for a run; precision from the hardware, never TRL's bf16 default on a CPU."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        max_length=config.max_seq_len,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        bf16=placement.precision == "bf16",
        fp16=placement.precision == "fp16",
        use_cpu=placement.device == "cpu",
        gradient_checkpointing=config.gradient_checkpointing,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        shuffle_dataset=True,
    )


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def sft_trainer_class() -> type:
    """TRL's SFTTrainer; on the CPU its loss is the model's own cross-entropy over the masked labels.

    TRL computes the loss with a chunked, fused lm-head kernel (plus entropy and token-accuracy metrics) that
    saves GPU memory; on a CPU it made a step about 20% slower than a plain PEFT step for the same loss.
    """
    import torch
    from transformers import Trainer
    from trl import SFTTrainer

    class CBTSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            if torch.cuda.is_available() and not self.args.use_cpu:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return CBTSFTTrainer


def build_trainer(
    config: TrainConfig,
    placement: Placement,
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[dict[str, list[int]]],
    output_dir: Path,
    callbacks: Sequence[Any] = (),
) -> Any:
    """The SFTTrainer of a run: pre-tokenised examples with assistant masks, a LoRA unless `model` has one."""
    from datasets import Dataset
    from peft import PeftModel

    return sft_trainer_class()(
        model=model,
        args=sft_arguments(config, placement, output_dir),
        train_dataset=Dataset.from_list(list(examples)),
        processing_class=tokenizer,
        peft_config=None if isinstance(model, PeftModel) else lora_config(config),
        callbacks=list(callbacks),
    )


def _any_rank(flag: bool, device: Any) -> bool:
    """Under `accelerate launch` every rank must stop at the same step: true if any rank saw the signal."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


# --- one run -------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    run_dir: Path
    status: Status
    final_loss: float | None = None
    steps: int = 0
    adapter_dir: Path | None = None
    gguf: Path | None = None
    published: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def new_run_id(name: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}-{name}"


def prepare_run_dir(config: TrainConfig, run_dir: Path | None = None) -> Path:
    """Create a run folder holding config.yaml; the folder is the run's identity."""
    run_dir = run_dir or config.runs_path() / new_run_id(config.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_NAME).write_text(config.to_yaml(), encoding="utf-8")
    return run_dir


def code_version() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def last_checkpoint(run_dir: Path) -> Path | None:
    """The run's last complete checkpoint (an incomplete newer one, from a kill while saving, is skipped)."""
    return last_complete_checkpoint(run_dir)


def check_publish_target(config: TrainConfig) -> None:
    target = config.adapters_path() / config.name
    if config.publish and target.exists() and not config.overwrite:
        raise TrainingError(
            f"an adapter named {config.name!r} is already published at {target}; choose another name or set "
            "overwrite: true to replace it (the old one is kept until the new one is complete)"
        )


def run_training(
    config: TrainConfig, run_dir: Path, *, resume: bool = False, stop: StopFlag | None = None
) -> RunResult:
    """Train, save, export and publish one run; every outcome ends with an `end` line in the run log."""
    stop = stop or StopFlag()
    from accelerate import PartialState

    main_process = PartialState().is_main_process
    log = RunLog(run_dir / LOG_NAME, enabled=main_process)
    started = time.time()
    log.write("start", pid=os.getpid(), run_dir=str(run_dir), resume=resume, config=config.to_dict())
    try:
        result = _train(config, run_dir, resume, stop, log, main_process, started)
    except (TrainingError, ConfigError, ModelError) as exc:
        log.write("end", status="failed", error=str(exc), error_kind=type(exc).__name__)
        raise
    except Exception as exc:
        log.write("end", status="failed", error=f"{type(exc).__name__}: {exc}", error_kind=type(exc).__name__)
        raise
    log.write(
        "end",
        status=result.status,
        final_loss=result.final_loss,
        step=result.steps,
        adapter=str(result.adapter_dir) if result.adapter_dir else None,
        gguf=str(result.gguf) if result.gguf else None,
        published=str(result.published) if result.published else None,
        signal=stop.signal_name,
    )
    return result


def _train(
    config: TrainConfig, run_dir: Path, resume: bool, stop: StopFlag, log: RunLog, main_process: bool, started: float
) -> RunResult:
    import peft
    import torch
    import transformers
    import trl

    if config.publish and not resume:
        check_publish_target(config)
    placement = choose_placement(config)
    source = resolve_base_model(config.base_model)
    log.write("phase", phase="loading", base=source.location, device=placement.device, precision=placement.precision)
    model, tokenizer = load_base(source, config, placement)
    dataset_path = config.dataset_path()
    counts = check_dataset(dataset_path, tokenizer, model_context_length(model))
    sessions = read_sessions(dataset_path)
    examples, stats = build_examples(sessions, tokenizer, config.max_seq_len)
    log.write("data", **stats.as_dict(), validator=counts)
    if stop.is_set:
        return RunResult(run_dir, "aborted")

    checkpoint = _resume_point(run_dir, log, main_process) if resume else None
    saved = checkpoint_state(checkpoint) if checkpoint else None
    if saved is not None and saved.global_step >= saved.max_steps:
        # transformers would still run one more step from a checkpoint at the limit: finish from it instead.
        from peft import PeftModel
        from transformers import TrainerState

        log.write("phase", phase="finishing", step=saved.global_step,
                  note=f"checkpoint {checkpoint.name} already reached max_steps {saved.max_steps}; no further steps")
        model = PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
        trainer = build_trainer(config, placement, model, tokenizer, examples, run_dir / "checkpoints")
        trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    else:
        trainer = build_trainer(
            config, placement, model, tokenizer, examples, run_dir / "checkpoints", make_callbacks(log, stop)
        )
        log.write("phase", phase="training")
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    steps = trainer.state.global_step
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    final_loss = float(losses[-1]) if losses else None

    adapter_dir = run_dir / "adapter"
    trainer.save_model(str(adapter_dir))  # every rank calls it; only the main one writes
    status: Status = "aborted" if stop.is_set else "completed"
    result = RunResult(run_dir, status, final_loss=final_loss, steps=steps, adapter_dir=adapter_dir)
    if not main_process:
        return result

    gguf_base = _gguf_for_export(config, source)
    if gguf_base is not None:
        from training.export_gguf import export_adapter

        result.gguf = export_adapter(adapter_dir, run_dir / "adapter.gguf", gguf_base).path
    manifest = {
        "run_id": run_dir.name,
        "name": config.name,
        "status": status,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "runtime_s": round(time.time() - started, 1),
        "steps": steps,
        "final_loss": final_loss,
        "loss_curve": [
            {"step": e["step"], "loss": e["loss"], "lr": e.get("learning_rate")}
            for e in trainer.state.log_history
            if "loss" in e
        ],
        "config": config.to_dict(),
        "dataset": {
            "path": _display_path(dataset_path),
            "sha256": file_sha256(dataset_path),
            **stats.as_dict(),
            "validator": counts,
        },
        "base_model": {
            "reference": source.reference,
            "weights": source.weights,
            "kind": source.kind,
            "location": _display_path(Path(source.location)) if source.kind != "hub" else source.location,
            "sha256": base_fingerprint(source),
            "gguf": str(gguf_base) if gguf_base else None,
            "gguf_sha256": _sha(gguf_base),
        },
        "adapter": {
            "peft": "adapter/",
            "gguf": "adapter.gguf" if result.gguf else None,
            "gguf_sha256": _sha(result.gguf),
            "scale": config.lora_alpha / config.lora_r,
        },
        "system_prompt": _prompt_version(config.system_prompt),
        "hardware": {"device": placement.device, "precision": placement.precision, "cpu": platform.processor() or
                     platform.machine(), "torch_threads": torch.get_num_threads()},
        "code_version": code_version(),
        "libraries": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                      "trl": trl.__version__},
    }
    result.manifest = manifest
    (run_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if status == "completed" and config.publish:
        result.published = publish_adapter(run_dir, config)
        log.write("published", path=str(result.published), name=config.name)
    return result


def _resume_point(run_dir: Path, log: RunLog, main_process: bool) -> Path | None:
    """Set incomplete checkpoints aside (logged), then the last complete one; None starts from step 0.

    Only the main process moves folders; every rank picks the same last complete checkpoint either way.
    """
    for moved_from, moved_to in set_aside_incomplete(run_dir) if main_process else []:
        log.write("checkpoint_set_aside", path=str(moved_from), moved_to=str(moved_to),
                  note=f"{moved_from.name} is incomplete (the process was killed while saving it); moved, not "
                       f"deleted, to {moved_to}")
    checkpoint = last_checkpoint(run_dir)
    log.write("resume", checkpoint=str(checkpoint) if checkpoint else None,
              note=None if checkpoint else "no complete checkpoint: training starts again from step 0")
    return checkpoint


def _gguf_for_export(config: TrainConfig, source: BaseModelSource) -> Path | None:
    from cbtcompare.models.weights import resolve_weights

    if config.base_gguf:
        return resolve_weights(config.base_gguf) if ":" in config.base_gguf else Path(config.base_gguf).expanduser()
    return source.gguf


def _sha(path: Path | None) -> str | None:
    from cbtcompare.models.weights import sha256_of

    return sha256_of(path) if path and path.is_file() else None


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _prompt_version(name: str | None) -> dict[str, str] | None:
    if not name:
        return None
    from cbtcompare.prompts import load_prompt

    prompt = load_prompt(name)
    return {"name": name, "version": prompt.version}


# --- publishing ----------------------------------------------------------------------------------------------


def publish_adapter(run_dir: Path, config: TrainConfig) -> Path:
    """Copy the finished adapter into adapters/<name>/ atomically: a temporary folder beside it, then a rename.

    An adapter already published under the name (only with overwrite) is swapped out in one step and deleted
    only after the new one is in place, so a reader finds the old or the new adapter, never half of one.
    Staging folders left by an earlier publish that was killed are removed first (noted in the run log).
    """
    adapters = config.adapters_path()
    adapters.mkdir(parents=True, exist_ok=True)
    target = adapters / config.name
    for action in clean_partial_outputs(adapters):
        RunLog(run_dir / LOG_NAME).write("cleanup", note=action)
    staging = staging_dir(adapters, config.name)
    staging.mkdir()
    try:
        for name in ADAPTER_FILES:
            shutil.copy2(run_dir / "adapter" / name, staging / name)
        if (run_dir / "adapter.gguf").is_file():
            shutil.copy2(run_dir / "adapter.gguf", staging / "adapter.gguf")
        shutil.copy2(run_dir / MANIFEST_NAME, staging / MANIFEST_NAME)
        (staging / "README.md").write_text(model_card(json.loads((run_dir / MANIFEST_NAME).read_text())), "utf-8")
        _fsync_tree(staging)
        if target.exists() and not config.overwrite:
            raise TrainingError(f"an adapter named {config.name!r} appeared at {target} while training")
        move_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _fsync_tree(folder: Path) -> None:
    """Flush every file to disk (and make it world-readable: PEFT writes its weights 0600)."""
    for path in folder.iterdir():
        path.chmod(0o644)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    folder.chmod(0o755)


def model_card(manifest: dict[str, Any]) -> str:
    """The model card published with an adapter: data, settings, loss curve, provenance and limits."""
    config = manifest["config"]
    base = manifest["base_model"]
    data = manifest["dataset"]
    validator = data.get("validator", {})
    rows = "\n".join(
        f"| {block[0]['step']}-{block[-1]['step']} | {statistics.fmean(p['loss'] for p in block):.3f} | "
        f"{min(p['loss'] for p in block):.3f}-{max(p['loss'] for p in block):.3f} | {block[-1].get('lr') or 0:.2e} |"
        for block in _blocks(manifest.get("loss_curve", []), 10)
    )
    gguf = manifest["adapter"].get("gguf")
    files = "`adapter_model.safetensors` + `adapter_config.json` (PEFT)" + (
        ", `adapter.gguf` (llama.cpp LoRA over the same base)" if gguf else ""
    )
    seen = (
        f"{manifest['steps'] * config['per_device_train_batch_size'] * config['gradient_accumulation_steps']}"
        f" of {data['examples']} windows"
    )
    return f"""# {manifest['name']}

A LoRA adapter trained by CBTCompare's pipeline (`training/train_lora.py`, TRL SFTTrainer + PEFT) for
research on CBT fine-tuning. **A research artefact, not a therapist.**

## Data
- `{data['path']}` (sha256 `{data['sha256']}`): {data['sessions']} synthetic sessions
  ({validator.get('profiles', '?')} profiles, {validator.get('therapist_turns', '?')} therapist turns; no real
  patient data), cut into {data['examples']} windows of whole exchanges of at most {config['max_seq_len']} tokens,
  each starting with the system prompt; {data['tokens']} tokens, {data['therapist_tokens']} of them therapist
  tokens. Loss on therapist turns only (their text and end-of-turn token).
- This run saw {seen} ({manifest['steps']} optimizer steps).

## Training
- Base: `{base['reference']}` ({base['kind']}; sha256 `{base['sha256']}`)
- LoRA r={config['lora_r']}, alpha={config['lora_alpha']} (scale {config['lora_alpha'] / config['lora_r']:g}),
  dropout {config['lora_dropout']}, on {', '.join(config['target_modules'])}; embeddings and lm_head untouched
- AdamW, learning rate {config['learning_rate']} ({config['lr_scheduler_type']}, warm-up {config['warmup_ratio']}),
  batch {config['per_device_train_batch_size']} x {config['gradient_accumulation_steps']} accumulation, seed
  {config['seed']}, {manifest['hardware']['device']} in {manifest['hardware']['precision']},
  {manifest['runtime_s'] / 60:.1f} minutes
- Final loss {manifest['final_loss']:.4f}; code `{manifest.get('code_version')}`; run `{manifest['run_id']}`
- System prompt at inference: `{(manifest.get('system_prompt') or {}).get('version')}`
- Files: {files}; every figure here comes from `manifest.json`

## Loss curve (therapist tokens)
Mean loss per block of steps (each step is one window, so single steps are noisy), its range, and the
learning rate at the block's end; every step's loss is in `manifest.json`.

| steps | mean loss | range | lr |
|---|---:|---:|---:|
{rows}

## Limits
- Trained on a small synthetic dataset; it imitates the style of the sessions, nothing more. It can be wrong,
  confidently and fluently.
- It cannot handle a crisis. Anyone at risk must be directed to emergency services or a crisis line.
- Not a medical device and not a therapist: do not use it to treat or advise anyone. For research comparisons only.

## Evidence of effect
{START_EFFECT}
Not measured yet: run `benchmarks/adapter_effect.py --write-card` with this adapter registered.
{END_EFFECT}
"""


def _blocks(points: list[dict[str, Any]], count: int) -> list[list[dict[str, Any]]]:
    """`points` in at most `count` consecutive blocks of near-equal size."""
    if not points:
        return []
    size = -(-len(points) // count)
    return [points[i : i + size] for i in range(0, len(points), size)]


# --- command line --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_lora", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a YAML config file or a preset name in training/configs/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    parser.add_argument("--run-dir", type=Path, help="the run folder (default: a new one under <data dir>/runs)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    parser.add_argument("--help-config", action="store_true", help="list every setting with its help text")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = dict(parse_override(item) for item in args.set)
    if args.resume:
        if not args.run_dir:
            raise ConfigError("--resume needs --run-dir: the run folder to continue")
        saved = args.run_dir / CONFIG_NAME
        if not saved.is_file():
            raise ConfigError(f"{args.run_dir} holds no {CONFIG_NAME}; it is not a run folder")
        return TrainConfig.from_yaml(saved, overrides)
    if not args.config:
        raise ConfigError("give --config (a YAML file or a preset name) or --resume --run-dir DIR")
    return TrainConfig.from_yaml(args.config, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.help_config:
        for name, text in field_help().items():
            print(f"{name:30} {text}")
        return 0
    stop = StopFlag()
    stop.install()
    try:
        config = config_from_args(args)
        if world_size() > 1 and not args.run_dir:
            raise ConfigError("under accelerate launch give --run-dir, so every process writes to the same run folder")
        if args.resume or (world_size() > 1 and os.environ.get("RANK", "0") != "0"):
            run_dir = args.run_dir
        else:
            run_dir = prepare_run_dir(config, args.run_dir)
        result = run_training(config, run_dir, resume=args.resume, stop=stop)
    except (TrainingError, ConfigError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{result.status}: run {result.run_dir} (steps {result.steps}, final loss {result.final_loss})")
    if result.published:
        print(f"published: {result.published}")
    return 0 if result.status == "completed" else 3


if __name__ == "__main__":
    sys.exit(main())
