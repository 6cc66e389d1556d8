"""Named model specs -> loaded models. Each spec is loaded once per registry and reused.

Specs come from the shipped models.yaml plus, when set, the file named by CBTCOMPARE_MODELS (same
format; an entry there replaces a shipped one of the same name). A backend is one module plus one line
in BACKENDS; what it can do (remote endpoint, local weights, trainable, adapters, JSON constraints) is
read from its class by backend_capabilities, so callers never keep their own lists of backend names.
Relative adapter and weights paths are resolved against the repository root.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from cbtcompare.config_errors import format_validation_error
from cbtcompare.models.base import BackendCapabilities, ChatModel, ModelError, ModelNotFound, ModelSpec
from cbtcompare.paths import PACKAGE_ROOT, REPO_ROOT

SHIPPED_MODELS = PACKAGE_ROOT / "models" / "models.yaml"

# backend name -> "module:Class"; the class takes a ModelSpec and implements `unavailable_reason(spec)`.
BACKENDS: dict[str, str] = {
    "llamacpp": "cbtcompare.models.llamacpp:LlamaCppModel",
    "hf": "cbtcompare.models.hf:HFModel",
    "openai": "cbtcompare.models.openai_compat:OpenAICompatModel",
    "gemini": "cbtcompare.models.gemini:GeminiModel",
}


@dataclass(frozen=True)
class Availability:
    name: str
    backend: str
    available: bool
    reason: str
    description: str


def backend_class(backend: str) -> type[ChatModel]:
    if backend not in BACKENDS:
        raise ModelNotFound(f"unknown backend {backend!r}; known backends: {', '.join(sorted(BACKENDS))}")
    module_name, _, class_name = BACKENDS[backend].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def backend_capabilities(backend: str) -> BackendCapabilities:
    """What `backend` can do, from its class alone: nothing is loaded, downloaded or contacted."""
    return backend_class(backend).capabilities(backend)


def backends_with(capability: str) -> frozenset[str]:
    """The backends for which the flag `capability` (a BackendCapabilities field) is true, e.g. "remote"."""
    if capability not in _CAPABILITY_FLAGS:
        raise ValueError(f"unknown capability {capability!r}; known: {', '.join(_CAPABILITY_FLAGS)}")
    return frozenset(name for name in BACKENDS if getattr(backend_capabilities(name), capability))


_CAPABILITY_FLAGS = tuple(name for name, field in BackendCapabilities.model_fields.items() if field.annotation is bool)


def load_spec_file(path: Path) -> list[ModelSpec]:
    """Parse a models file; errors name the file, the entry and the field."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    entries = document.get("models") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a top-level 'models:' list")
    specs = []
    for index, entry in enumerate(entries):
        try:
            specs.append(ModelSpec.model_validate(_resolve_paths(entry)))
        except ValidationError as exc:
            label = entry.get("name", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
            raise ValueError(format_validation_error(exc, f"{path}: model {label}", entry, whole="entry")) from exc
    return specs


def _resolve_paths(entry: object) -> object:
    """Relative adapter paths (and relative GGUF paths) are read against the repository root."""
    if not isinstance(entry, dict):
        return entry
    resolved = dict(entry)
    backend = resolved.get("backend")
    if backend not in backends_with("local_weights"):  # an endpoint's adapter is a model id, not a path
        return resolved
    keys = ["adapter"] + (["weights"] if backend == "llamacpp" else [])
    for key in keys:
        value = resolved.get(key)
        if isinstance(value, str) and ":" not in value and not Path(value).expanduser().is_absolute():
            resolved[key] = str(REPO_ROOT / value)
    return resolved


class Registry:
    def __init__(self, specs: list[ModelSpec]):
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self._specs[spec.name] = spec
        self._loaded: dict[str, ChatModel] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_files(cls, extra: Path | None = None) -> Registry:
        specs = load_spec_file(SHIPPED_MODELS)
        configured = extra or (Path(os.environ["CBTCOMPARE_MODELS"]) if os.environ.get("CBTCOMPARE_MODELS") else None)
        if configured is not None:
            if not configured.is_file():
                raise FileNotFoundError(f"CBTCOMPARE_MODELS points at {configured}, which does not exist")
            specs += load_spec_file(configured)
        return cls(specs)

    def names(self) -> list[str]:
        return list(self._specs)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ModelNotFound(
                f"no model named {name!r}; known models: {', '.join(self._specs)}. "
                "Add it to a models file named by CBTCOMPARE_MODELS."
            ) from None

    def add(self, spec: ModelSpec) -> None:
        """Register (or replace) a spec, e.g. an adapter a training job just published."""
        with self._lock:
            self._specs[spec.name] = spec
            stale = self._loaded.pop(spec.name, None)
        if stale is not None:
            stale.close()

    def availability(self, name: str) -> Availability:
        spec = self.spec(name)
        try:
            reason = backend_class(spec.backend).unavailable_reason(spec)
        except ModelError as exc:
            reason = str(exc)
        return Availability(spec.name, spec.backend, reason is None, reason or "", spec.description)

    def available_names(self) -> list[str]:
        return [name for name in self._specs if self.availability(name).available]

    def load(self, name: str) -> ChatModel:
        spec = self.spec(name)
        with self._lock:
            model = self._loaded.get(name)
            if model is None:
                model = backend_class(spec.backend)(spec)
                self._loaded[name] = model
            return model

    def close(self) -> None:
        with self._lock:
            models, self._loaded = list(self._loaded.values()), {}
        for model in models:
            model.close()
