"""The one place that says what a model is: its variant (base, tuned, prompted) and family.

Compare, Simulate, the judge's results, the statistics and rating all ask here, so a model is classified
the same way whichever tab or command produced its transcript. The rules are data
(`provenance_rules.yaml`); a transcript that records its variant and family keeps them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cbtcompare.content_hash import content_version
from cbtcompare.models.base import ModelSpec

RULES_PATH = Path(__file__).resolve().parent / "provenance_rules.yaml"

Variant = Literal["base", "tuned", "prompted", "unassigned"]
VARIANTS: tuple[Variant, ...] = ("base", "tuned", "prompted", "unassigned")
"""`unassigned`: an imported transcript whose producer is not known; left out of tuned-vs-base analyses."""


class ProvenanceRules(BaseModel):
    model_config = ConfigDict(frozen=True)

    tuned: tuple[re.Pattern[str], ...]
    prompted: tuple[re.Pattern[str], ...]
    plain_system_prompts: tuple[str, ...]
    families: tuple[str, ...]
    version: str


@cache
def rules(path: Path = RULES_PATH) -> ProvenanceRules:
    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)

    def patterns(items: list[str]) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(item, re.IGNORECASE) for item in items)

    return ProvenanceRules(
        tuned=patterns(raw["variant"]["tuned"]),
        prompted=patterns(raw["variant"]["prompted"]),
        plain_system_prompts=tuple(raw["variant"]["plain_system_prompts"]),
        families=tuple(str(f).lower() for f in raw["families"]),
        version=content_version(path.name, text),
    )


class ModelProvenance(BaseModel):
    """What is stored about a model beside each transcript: its name, variant and family."""

    model_config = ConfigDict(frozen=True)

    name: str
    variant: Variant
    family: str = Field(description="shared by a base model, its adapters and its prompted variants")
    rules_version: str


def _weights_stem(weights: str) -> str:
    """`hf:owner/repo:file.Q4_1.gguf` -> `file.Q4_1`; a Hub id or endpoint model id -> its last part."""
    tail = weights.split(":")[-1].rstrip("/")
    return Path(tail).stem if tail.endswith(".gguf") else tail.rsplit("/", 1)[-1]


def known_family(text: str) -> str | None:
    """The first known family whose name occurs in `text` (case-insensitive), else None."""
    haystack = text.lower()
    return next((family for family in rules().families if family in haystack), None)


def variant_of(spec: ModelSpec) -> Variant:
    r = rules()
    if spec.adapter:
        return "tuned"
    if any(p.search(spec.name) for p in r.prompted):
        return "prompted"
    if any(p.search(spec.name) for p in r.tuned):
        return "tuned"
    if spec.system_prompt and spec.system_prompt not in r.plain_system_prompts:
        return "prompted"
    return "base"


def family_of(spec: ModelSpec) -> str:
    """A known family from the name or weights; else the weights' stem (shared with the model's adapters)."""
    return known_family(f"{spec.name} {spec.weights}") or _weights_stem(spec.weights).lower() or spec.name.lower()


def describe(spec: ModelSpec) -> ModelProvenance:
    return ModelProvenance(
        name=spec.name, variant=variant_of(spec), family=family_of(spec), rules_version=rules().version
    )


def _spec_from_record(record: Mapping[str, Any]) -> ModelSpec | None:
    """The spec a transcript's therapist record was made from (its `spec`, else its own fields)."""
    raw = record.get("spec") if isinstance(record.get("spec"), Mapping) else record
    fields = {k: raw[k] for k in ("name", "backend", "weights", "adapter", "system_prompt") if raw.get(k) is not None}
    if not {"name", "weights"} <= fields.keys():
        return None
    fields.setdefault("backend", "llamacpp")  # classification never reads the backend; old records lack it
    try:
        return ModelSpec.model_validate(fields)
    except ValueError:
        return None


def of_record(record: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> tuple[Variant, str]:
    """(variant, family) of a stored transcript: what it recorded, else classified from its therapist record.

    A transcript with no model record (an import that named no therapist) is `unassigned`.
    """
    meta = meta or {}
    recorded_variant = meta.get("variant") or record.get("variant")
    recorded_family = meta.get("family") or record.get("family")
    spec = _spec_from_record(record)
    variant = recorded_variant if recorded_variant in VARIANTS else (variant_of(spec) if spec else "unassigned")
    family = str(recorded_family) if recorded_family else (family_of(spec) if spec else "unknown")
    return variant, family
