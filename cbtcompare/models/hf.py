"""Chat models through transformers + PEFT: one loaded base per weights, LoRA adapters switched on and off over it.

Weights are a local transformers folder, a Hub id (downloaded by transformers into its cache), or a GGUF
file read through transformers' `gguf_file` support (dequantised to full precision; tokenizer and chat
template from the same GGUF). CUDA is used when torch sees it (bf16 where the GPU supports it), else the
CPU in fp32; `quantization: 4bit` loads through bitsandbytes and needs CUDA.

Every spec over the same (weights, dtype, device, quantization) shares one loaded base from a
process-wide cache. A spec with a PEFT adapter adds that adapter to the shared base (a PeftModel
wrapping it in place); a spec without one generates inside `disable_adapter()`. One lock per base
serialises adapter selection and generation, so base and tuned never hold two copies of the weights
and never see each other's adapter. Seeds reseed torch's global generator per call: two bases
sampling at the same moment in one process can disturb each other's draws. Loads are serialised
process-wide (one base loads at a time); an adapter is keyed by its folder and scale.

Each base keeps a few conversations' KV caches (hf_cache.py): a request reuses the cached prefix it
shares with an earlier one under the same adapter setting, so turn k of a session costs its new tokens.
Prompts are evaluated in position-aligned chunks whether or not a prefix is reused, so same seed + same
settings give the same text either way. `CBTCOMPARE_PREFIX_REUSE=0` (the llama.cpp setting) turns reuse
off: every request then evaluates its whole prompt, in the same chunks.

This module never downloads anything itself except through transformers/huggingface_hub, and never
constrains output: `complete_json` generates plain text that callers must validate.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cbtcompare.content_hash import content_digest
from cbtcompare.models.base import (
    AdapterMismatch,
    BackendUnavailable,
    ChatModel,
    InvalidWeights,
    Message,
    ModelError,
    ModelInfo,
    ModelNotFound,
    ModelSpec,
    Sampling,
    Usage,
)
from cbtcompare.models.defaults import DEFAULT_WEIGHTS_REF
from cbtcompare.models.hf_cache import PREFIX_CHUNK_TOKENS, PrefixCacheStore
from cbtcompare.models.prefix_reuse import prefix_reuse_enabled
from cbtcompare.models.weights import (
    check_gguf,
    hub_cached_file,
    hub_offline,
    parse_hf_reference,
    resolve_weights,
    sha256_of,
)
from cbtcompare.paths import REPO_ROOT

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MODEL_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")
INSTALL_HINT = "run `make run` or `pip install -r requirements.txt`"


@dataclass(frozen=True)
class WeightsSource:
    """Where a spec's weights come from, decided without loading them."""

    kind: Literal["gguf", "folder", "hub"]
    location: str  # a folder path, a GGUF file path, a Hub id, or an hf: GGUF reference not downloaded yet

    @property
    def path(self) -> Path | None:
        return Path(self.location) if self.kind != "hub" and not self.location.startswith("hf:") else None


def _require_libraries(spec: ModelSpec) -> None:
    needed = ["torch", "transformers"]
    if spec.adapter:
        needed.append("peft")
    for module in needed:
        if importlib.util.find_spec(module) is None:
            raise BackendUnavailable(f"the hf backend needs {module}, which is not installed; {INSTALL_HINT}")


def _local_path(reference: str) -> Path:
    """A path as written, or read against the repository root when it is relative and absent."""
    path = Path(reference).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path


def locate_weights(spec: ModelSpec, *, download: bool) -> WeightsSource:
    """Classify `spec.weights`; with download=False nothing is fetched (availability checks)."""
    reference = spec.weights
    if reference == DEFAULT_WEIGHTS_REF:
        return WeightsSource("gguf", str(resolve_weights(reference)))
    if reference.startswith("hf:"):
        body = reference.removeprefix("hf:")
        if ":" not in body:
            return _hub_source(body, spec)
        repo, filename = parse_hf_reference(reference)
        if download:
            path = resolve_weights(reference)
            check_gguf(path)
            return WeightsSource("gguf", str(path))
        if hub_cached_file(repo, filename) is None and hub_offline():
            raise ModelNotFound(
                f"{filename} from {repo} is not in the Hugging Face cache and the Hub is switched off "
                "(HF_HUB_OFFLINE); connect once to download it, or put the file on disk and use its path",
                model=spec.name,
            )
        return WeightsSource("gguf", reference)
    path = _local_path(reference)
    if path.is_file():
        check_gguf(path)
        return WeightsSource("gguf", str(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidWeights(
                f"{path} has no config.json, so it is not a transformers model folder; point weights at the folder "
                "`save_pretrained` wrote, or at a .gguf file",
                model=spec.name,
            )
        _check_model_folder(path, spec)
        return WeightsSource("folder", str(path))
    if (
        path.is_absolute()
        or reference.startswith((".", "~"))
        or reference.endswith(".gguf")
        or not HUB_ID.match(reference)
    ):
        raise ModelNotFound(
            f"the weights path {path} does not exist; point weights at a transformers folder, a .gguf file or a "
            "Hub id (owner/name) in the models file",
            model=spec.name,
        )
    return _hub_source(reference, spec)


def _check_model_folder(path: Path, spec: ModelSpec) -> None:
    """A folder `save_pretrained` wrote: weights and tokenizer files beside config.json."""
    if not any(next(path.glob(pattern), None) for pattern in MODEL_WEIGHT_PATTERNS):
        raise InvalidWeights(
            f"{path} has a config.json but no weights (*.safetensors or pytorch_model*.bin); the download or save "
            "is incomplete: save or download the model again",
            model=spec.name,
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InvalidWeights(
            f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer into the same folder "
            "(`tokenizer.save_pretrained(folder)`)",
            model=spec.name,
        )


def _hub_source(repo: str, spec: ModelSpec) -> WeightsSource:
    if not HUB_ID.match(repo):
        raise ModelNotFound(f"{repo!r} is not a Hub id; write owner/name", model=spec.name)
    if hub_offline() and hub_cached_file(repo, "config.json") is None:
        raise ModelNotFound(
            f"{repo} is neither a local folder nor a model in the Hugging Face cache, and the Hub is switched off "
            f"(HF_HUB_OFFLINE); download it where the Hub is reachable (`hf download {repo} --local-dir DIR`) "
            "and set weights to DIR, or fix the path",
            model=spec.name,
        )
    return WeightsSource("hub", repo)


def _check_quantization(spec: ModelSpec, source: WeightsSource) -> None:
    if spec.quantization is None:
        return
    if source.kind == "gguf":
        raise InvalidWeights(
            "4-bit loading needs a transformers folder or Hub id; transformers dequantises a GGUF to full precision "
            "(use the llamacpp backend to run a quantised GGUF, or drop `quantization`)",
            model=spec.name,
        )
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(
            "4-bit (bitsandbytes) loading needs a CUDA GPU and torch sees none; drop `quantization: 4bit` to run "
            "in fp32 on the CPU, or run on a machine with a GPU",
            model=spec.name,
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise BackendUnavailable(
            "4-bit loading needs bitsandbytes, which is not installed; `pip install bitsandbytes`", model=spec.name
        )


def adapter_folder(spec: ModelSpec) -> Path | None:
    """The PEFT folder named by the spec, checked for the files PEFT needs."""
    if not spec.adapter:
        return None
    path = _local_path(spec.adapter)
    if not path.exists():
        raise ModelNotFound(
            f"adapter not built yet: {path} does not exist; train it (see training/) or fix the path",
            model=spec.name,
        )
    if path.is_file():
        raise InvalidWeights(
            f"{path} is a file; the hf backend needs a PEFT adapter folder (adapter_config.json + "
            "adapter_model.safetensors). A GGUF LoRA runs on the llamacpp backend",
            model=spec.name,
        )
    if not (path / "adapter_config.json").is_file() or _adapter_weights_file(path) is None:
        raise InvalidWeights(
            f"{path} is not a PEFT adapter folder: it needs adapter_config.json and adapter_model.safetensors, "
            "as `save_pretrained` writes them",
            model=spec.name,
        )
    return path


def _adapter_weights_file(folder: Path) -> Path | None:
    return next((folder / name for name in ADAPTER_WEIGHT_FILES if (folder / name).is_file()), None)


def template_file(spec: ModelSpec) -> Path | None:
    if spec.chat_template == "auto":
        return None
    path = _local_path(spec.chat_template)
    if not path.is_file():
        raise ModelNotFound(
            f"chat template file {path} does not exist; set chat_template to a Jinja file or to 'auto'",
            model=spec.name,
        )
    return path


def _placement() -> tuple[str, str]:
    """(device, dtype name): CUDA in bf16 (fp16 on GPUs without bf16) when present, else CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return "cuda", "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "cpu", "float32"


# --- the process-wide cache of loaded bases -------------------------------------------------------------------

BaseKey = tuple[str, str, str, str | None]


@dataclass
class LoadedBase:
    """One loaded transformers model and its tokenizer, shared by every spec over the same weights."""

    key: BaseKey
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    lock: threading.Lock = field(default_factory=threading.Lock)  # one generation or adapter change at a time
    peft: PeftModel | None = None
    adapter_users: dict[str, int] = field(default_factory=dict)
    users: int = 0
    prefixes: PrefixCacheStore = field(default_factory=PrefixCacheStore)  # KV caches of recent conversations

    def new_cache(self) -> DynamicCache:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config.get_text_config(decoder=True))

    def plain_users(self) -> int:
        """Open specs on this base without an adapter."""
        return self.users - sum(self.adapter_users.values())


_BASES: dict[BaseKey, LoadedBase] = {}
_BASES_LOCK = threading.Lock()


def loaded_bases() -> list[LoadedBase]:
    """The bases this process holds now (for status pages and tests)."""
    with _BASES_LOCK:
        return list(_BASES.values())


def _acquire_base(spec: ModelSpec, source: WeightsSource) -> LoadedBase:
    device, dtype = _placement()
    key: BaseKey = (source.location, dtype, device, spec.quantization)
    with _BASES_LOCK:
        base = _BASES.get(key)
        if base is None:
            model, tokenizer = _load(spec, source, device, dtype)
            base = _BASES[key] = LoadedBase(key, model, tokenizer)
        base.users += 1
        return base


def _release_base(base: LoadedBase) -> None:
    with _BASES_LOCK:
        base.users -= 1
        if base.users > 0 or _BASES.get(base.key) is not base:
            if base.plain_users() == 0:
                base.prefixes.drop(None)
            return
        del _BASES[base.key]
    base.prefixes.clear()
    if base.key[2] == "cuda":
        import torch

        torch.cuda.empty_cache()


def _load(
    spec: ModelSpec, source: WeightsSource, device: str, dtype_name: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    kwargs: dict[str, object] = {"dtype": dtype}
    if source.kind == "gguf":
        path = Path(source.location)
        folder, kwargs["gguf_file"] = str(path.parent), path.name
    else:
        folder = source.location
    if spec.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
        kwargs["device_map"] = {"": 0}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=kwargs.get("gguf_file"))
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except OSError as exc:
        raise _load_error(spec, source, exc) from exc
    except (ValueError, RuntimeError, KeyError) as exc:
        raise InvalidWeights(
            f"transformers could not load {source.location} ({_first_line(exc)}); the files may be truncated or "
            "of an architecture transformers cannot read: download them again, or use the llamacpp backend for a GGUF",
            model=spec.name,
        ) from exc
    if device == "cuda" and spec.quantization is None:
        model.to(device)
    model.eval()
    return model, tokenizer


def _load_error(spec: ModelSpec, source: WeightsSource, exc: OSError) -> ModelError:
    if source.kind == "hub":
        return ModelNotFound(
            f"could not load {source.location} from the Hugging Face Hub ({_first_line(exc)}); check the id, connect "
            f"to the internet once so transformers can download it, or download it elsewhere (`hf download "
            f"{source.location} --local-dir DIR`) and set weights to DIR",
            model=spec.name,
        )
    return InvalidWeights(
        f"could not read the model files in {source.location} ({_first_line(exc)}); the folder may be incomplete: "
        "save or download it again",
        model=spec.name,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- adapters over a shared base -------------------------------------------------------------------------------


def _adapter_name(folder: Path, scale: float) -> str:
    digest = content_digest(f"{folder.resolve()}|{scale}")
    return f"adapter_{digest}"


def _check_adapter_fits(base: LoadedBase, folder: Path, weights: dict[str, torch.Tensor], spec: ModelSpec) -> None:
    """Compare every LoRA matrix with the module it targets, before anything touches the shared base."""
    modules = dict(base.model.named_modules())
    trained_on = _adapter_base_name(folder)
    origin = f" (it was trained on {trained_on})" if trained_on else ""
    for key, tensor in weights.items():
        match = LORA_KEY.match(key)
        if not match:
            continue
        name, part = match["module"], match["part"]
        module = modules.get(name)
        if module is None:
            raise AdapterMismatch(
                f"the adapter {folder} targets {name}, which {base.key[0]} does not have{origin}; use an adapter "
                "trained on this base model",
                model=spec.name,
            )
        in_features, out_features = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if in_features is None or out_features is None:
            continue
        expected, got = (in_features, tensor.shape[1]) if part == "A" else (out_features, tensor.shape[0])
        if expected != got:
            raise AdapterMismatch(
                f"the adapter {folder} does not fit {base.key[0]}: {name} has {in_features} inputs and "
                f"{out_features} outputs, but the adapter's lora_{part} matrix has shape {tuple(tensor.shape)}"
                f"{origin}; use an adapter trained on this base model",
                model=spec.name,
            )


def _adapter_base_name(folder: Path) -> str | None:
    import json

    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("base_model_name_or_path") if isinstance(config, dict) else None


def _attach_adapter(base: LoadedBase, folder: Path, spec: ModelSpec) -> str:
    """Load the adapter onto the shared base once (or count one more user of it); returns its name."""
    from peft import PeftConfig, PeftModel
    from peft.auto import MODEL_TYPE_TO_PEFT_MODEL_MAPPING
    from peft.tuners.lora import LoraLayer
    from peft.utils import load_peft_weights

    name = _adapter_name(folder, spec.adapter_scale)
    with base.lock:
        if name in base.adapter_users:
            base.adapter_users[name] += 1
            return name
        try:
            config = PeftConfig.from_pretrained(str(folder))
        except (ValueError, OSError, TypeError) as exc:
            raise InvalidWeights(
                f"{folder}/adapter_config.json is not a PEFT config PEFT can read ({_first_line(exc)})", model=spec.name
            ) from exc
        if config.is_prompt_learning:
            raise InvalidWeights(
                f"{folder} is a prompt-learning adapter; the hf backend switches LoRA-style adapters only",
                model=spec.name,
            )
        if spec.adapter_scale != 1.0 and config.peft_type.value != "LORA":
            raise InvalidWeights(
                f"adapter_scale only applies to LoRA adapters and {folder} is {config.peft_type.value}; set it to 1",
                model=spec.name,
            )
        _check_adapter_fits(base, folder, load_peft_weights(str(folder), device="cpu"), spec)
        config.inference_mode = True
        fresh = base.peft is None
        try:
            if fresh:
                wrapper = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(config.task_type, PeftModel)
                with warnings.catch_warnings():  # PEFT reads a deprecated transformers attribute here
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                    base.peft = wrapper(base.model, config, adapter_name=name)
            base.peft.load_adapter(str(folder), adapter_name=name)
        except Exception as exc:
            _undo_adapter(base, name, fresh)
            raise AdapterMismatch(
                f"PEFT could not load the adapter {folder} onto {base.key[0]} ({_first_line(exc)}); use an adapter "
                "trained on this base model",
                model=spec.name,
            ) from exc
        if spec.adapter_scale != 1.0:
            for module in base.model.modules():
                if isinstance(module, LoraLayer):
                    module.set_scale(name, spec.adapter_scale)
        base.adapter_users[name] = 1
        return name


def _undo_adapter(base: LoadedBase, name: str, fresh: bool) -> None:
    """Take an adapter off the shared base; the last one removes the PEFT layers altogether."""
    if base.peft is None:
        return
    if fresh or not [other for other in base.peft.peft_config if other != name]:
        base.peft.unload()
        base.peft = None
    elif name in base.peft.peft_config:
        with warnings.catch_warnings():  # "adapter X was active which is now deleted": expected here
            warnings.simplefilter("ignore", UserWarning)
            base.peft.delete_adapter(name)


def _detach_adapter(base: LoadedBase, name: str) -> None:
    with base.lock:
        base.adapter_users[name] -= 1
        if base.adapter_users[name] > 0:
            return
        del base.adapter_users[name]
        _undo_adapter(base, name, fresh=False)
        base.prefixes.drop(name)  # a later adapter under this name may hold other weights


# --- the model ------------------------------------------------------------------------------------------------


class HFModel(ChatModel):
    """A transformers causal LM, optionally with a PEFT adapter, over a base shared with every other spec."""

    local_weights = True
    trainable = True
    adapters = True
    supports_seed = True
    supports_json_schema = False

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        _require_libraries(spec)
        self.source = locate_weights(spec, download=True)
        _check_quantization(spec, self.source)
        self.adapter_path = adapter_folder(spec)
        template = template_file(spec)
        self._template = template.read_text(encoding="utf-8") if template else None
        self._closed = False
        self._base = _acquire_base(spec, self.source)
        self._adapter_name: str | None = None
        try:
            if self.adapter_path is not None:
                self._adapter_name = _attach_adapter(self._base, self.adapter_path, spec)
            if self._template is None and not getattr(self._base.tokenizer, "chat_template", None):
                raise InvalidWeights(
                    f"{self.source.location} carries no chat template; set chat_template to a Jinja file in the spec",
                    model=self.name,
                )
        except BaseException:
            self.close()
            raise

    @staticmethod
    def unavailable_reason(spec: ModelSpec) -> str | None:
        """Why this spec cannot load here, found without loading or downloading anything; None when it can."""
        try:
            _require_libraries(spec)
            source = locate_weights(spec, download=False)
            if source.kind == "gguf" and importlib.util.find_spec("gguf") is None:
                raise BackendUnavailable(f"reading a GGUF through transformers needs the gguf package; {INSTALL_HINT}")
            _check_quantization(spec, source)
            adapter_folder(spec)
            template_file(spec)
        except ModelError as exc:
            return str(exc)
        return None

    @property
    def base_model(self) -> PreTrainedModel:
        """The one transformers model every spec over these weights shares (adapters are injected into it)."""
        return self._base.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._base.tokenizer

    @property
    def context_length(self) -> int:
        limit = getattr(self._base.model.config, "max_position_embeddings", None)
        return min(self.spec.n_ctx, limit) if isinstance(limit, int) else self.spec.n_ctx

    def info(self) -> ModelInfo:
        adapter_weights = _adapter_weights_file(self.adapter_path) if self.adapter_path else None
        weights_file = self.source.path if self.source.kind == "gguf" else None
        return ModelInfo(
            name=self.spec.name,
            backend="hf",
            weights=self.source.location,
            weights_sha256=sha256_of(weights_file) if weights_file else None,
            adapter=str(self.adapter_path) if self.adapter_path else None,
            adapter_sha256=sha256_of(adapter_weights) if adapter_weights else None,
            adapter_scale=self.spec.adapter_scale,
            n_ctx=self.context_length,
        )

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text the chat template makes of `messages`, ending where the reply begins."""
        return self._base.tokenizer.apply_chat_template(
            [m.to_dict() for m in messages], add_generation_prompt=True, tokenize=False, chat_template=self._template
        )

    def _encode(self, messages: Sequence[Message]) -> list[int]:
        if self._closed:
            raise ModelError("this model was closed; load it again from the registry", model=self.name)
        # The template writes any BOS itself, as apply_chat_template(tokenize=True) assumes.
        return self._base.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"]

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._encode(messages))

    @contextmanager
    def _adapter_scope(self) -> Iterator[None]:
        """This spec's adapter setting on the shared base; the caller holds the base's lock."""
        peft = self._base.peft
        if peft is None:
            yield
        elif self._adapter_name is None:
            with peft.disable_adapter():
                yield
        else:
            peft.set_adapter(self._adapter_name, inference_mode=True)
            yield

    def _stream(self, messages: list[Message], sampling: Sampling, usage: Usage) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        prompt = self._encode(messages)
        usage.prompt_tokens = len(prompt)
        seed = sampling.seed if sampling.seed is not None else 0  # stream() resolved it; 0 only for direct calls
        streamer = TextIteratorStreamer(self._base.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        outcome: dict[str, object] = {}
        worker = threading.Thread(
            target=self._generate, args=(prompt, sampling, seed, streamer, cancel, outcome), daemon=True
        )
        worker.start()
        try:
            yield from _until_stop(streamer, sampling.stop, cancel, usage)
        finally:
            cancel.set()  # a consumer that stops early ends generation at the next token
            worker.join()
        error = outcome.get("error")
        if isinstance(error, BaseException):
            raise error
        usage.completion_tokens = int(outcome.get("completion_tokens", 0))  # type: ignore[call-overload]
        usage.cached_prompt_tokens = int(outcome.get("cached_prompt_tokens", 0))  # type: ignore[call-overload]
        usage.finish_reason = usage.finish_reason or str(outcome.get("finish_reason", "stop"))

    def _generate(
        self,
        prompt: list[int],
        sampling: Sampling,
        seed: int,
        streamer: object,
        cancel: threading.Event,
        outcome: dict[str, object],
    ) -> None:
        """Runs in a worker thread: holds the base's lock for the whole generation."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        base = self._base
        finished = False
        try:
            device = base.model.device
            input_ids = torch.tensor([prompt], dtype=torch.long, device=device)
            tokenizer = base.tokenizer
            kwargs: dict[str, object] = {
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "max_new_tokens": sampling.max_tokens,
                "streamer": streamer,
                "stopping_criteria": StoppingCriteriaList([Cancelled()]),
                "pad_token_id": tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id,
                "prefill_chunk_size": PREFIX_CHUNK_TOKENS,  # the same batches with or without a cached prefix
            }
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
            else:
                kwargs["do_sample"] = False
            with base.lock, self._adapter_scope():
                if cancel.is_set():
                    return
                reuse = prefix_reuse_enabled()
                lease = base.prefixes.take(self._adapter_name, prompt, base.new_cache) if reuse else None
                cache = lease.cache if lease is not None else base.new_cache()
                outcome["cached_prompt_tokens"] = lease.reused if lease is not None else 0
                torch.manual_seed(seed)
                generator = base.peft if base.peft is not None else base.model
                output = generator.generate(**kwargs, cache=cache)
                if reuse:  # only after a whole generation: a failed one may leave the cache half-written
                    base.prefixes.keep(self._adapter_name, prompt, cache)
            finished = True
            new_tokens = output[0, len(prompt) :].tolist()
            eos = _eos_ids(base)
            outcome["completion_tokens"] = len(new_tokens)
            ended_on_eos = bool(new_tokens) and new_tokens[-1] in eos
            hit_limit = len(new_tokens) >= sampling.max_tokens and not ended_on_eos
            outcome["finish_reason"] = "length" if hit_limit else "stop"
        except BaseException as exc:  # handed to the consuming thread, which re-raises it
            outcome["error"] = _generation_error(exc, self.name)
        finally:
            if not finished:
                streamer.end()  # type: ignore[attr-defined]  # unblocks the consumer

    def _complete_json(self, messages: list[Message], schema: dict, sampling: Sampling) -> str:
        """Plain transformers cannot constrain decoding: this generates free text, and callers validate it."""
        return self.complete(messages, sampling)

    def close(self) -> None:
        """Drop this spec's adapter from the shared base, and the base itself when no spec uses it any more."""
        if self._closed:
            return
        self._closed = True
        base = getattr(self, "_base", None)
        if base is None:
            return
        if self._adapter_name is not None:
            _detach_adapter(base, self._adapter_name)
            self._adapter_name = None
        _release_base(base)


def _eos_ids(base: LoadedBase) -> set[int]:
    configured = base.model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if base.tokenizer.eos_token_id is not None:
        ids.add(base.tokenizer.eos_token_id)
    return ids


def _generation_error(exc: BaseException, model: str) -> BaseException:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return ModelError(
                "the GPU ran out of memory while generating; lower max_tokens, shorten the conversation, or load "
                "the weights with `quantization: 4bit`",
                model=model,
            )
    except ImportError:
        pass
    return exc


def _until_stop(chunks: Iterator[str], stops: Sequence[str], cancel: threading.Event, usage: Usage) -> Iterator[str]:
    """Pass chunks through, cutting the text before the first stop string (held back until it cannot start one)."""
    if not stops:
        for chunk in chunks:
            if chunk:
                yield chunk
        return
    hold = max(len(stop) for stop in stops) - 1
    text, sent = "", 0
    for chunk in chunks:
        text += chunk
        hits = [index for index in (text.find(stop, max(0, sent - hold)) for stop in stops) if index >= 0]
        if hits:
            end = min(hits)
            if end > sent:
                yield text[sent:end]
            usage.finish_reason = "stop"
            cancel.set()
            return
        safe = len(text) - hold
        if safe > sent:
            yield text[sent:safe]
            sent = safe
    if len(text) > sent:
        yield text[sent:]
