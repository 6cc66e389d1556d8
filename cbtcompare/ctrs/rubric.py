"""CTRS rubrics as versioned data files: loading, validation, and the text a judge is shown.

A rubric is a YAML (or JSON) file: an id, a declared version, an integer scale with a word label for
every level, and items, each with a description and anchor texts whose level ranges cover the scale
exactly. The stored version is the declared one plus a digest of the file text, so any edit shows up
beside the scores it produced. This module never calls a model and never holds rubric text itself.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cbtcompare.config_errors import format_validation_error
from cbtcompare.content_hash import content_version
from cbtcompare.paths import PACKAGE_ROOT

RUBRICS_DIR = PACKAGE_ROOT / "rubrics"
# Short names accepted by load_rubric and the CLI's --rubric.
RUBRIC_ALIASES: dict[str, str] = {"paper": "paper_1_10", "classic": "classic_0_6"}
ITEM_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RANGE_KEY = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int = Field(description="lowest score")
    max: int = Field(description="highest score")
    labels: dict[int, str] = Field(description="a word label for every level from min to max")

    @model_validator(mode="after")
    def _labels_cover_levels(self) -> Scale:
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be above min ({self.min})")
        expected = set(range(self.min, self.max + 1))
        if set(self.labels) != expected:
            missing = sorted(expected - set(self.labels))
            extra = sorted(set(self.labels) - expected)
            raise ValueError(f"labels must cover every level {self.min}-{self.max}; missing {missing}, extra {extra}")
        return self

    @property
    def levels(self) -> list[int]:
        return list(range(self.min, self.max + 1))


class Anchor(BaseModel):
    model_config = ConfigDict(frozen=True)

    low: int
    high: int
    text: str

    @property
    def span(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


class RubricItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="lowercase id used as the JSON key, e.g. agenda")
    name: str = Field(description="the item's title")
    description: str = Field(description="what the item rates, one or two sentences")
    anchors: tuple[Anchor, ...] = Field(description="level range ('1-2' or '6') -> what that range looks like")
    allow_na: bool = Field(False, description="may the judge answer 'n/a' (not applicable) for this item")
    part: str | None = Field(None, description="the rubric part the item belongs to (a key of Rubric.parts)")

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not ITEM_ID.match(value):
            raise ValueError(f"item id {value!r} must be lowercase letters, digits and _ (starting with a letter)")
        return value

    @field_validator("anchors", mode="before")
    @classmethod
    def _parse_anchor_mapping(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        anchors = []
        for key, text in value.items():
            match = RANGE_KEY.match(str(key))
            if not match:
                raise ValueError(f"anchor key {key!r} must be a level ('6') or a range ('1-2')")
            low = int(match.group(1))
            high = int(match.group(2)) if match.group(2) is not None else low
            anchors.append({"low": low, "high": high, "text": text})
        return anchors


class Rubric(BaseModel):
    """A loaded rubric; `version` is the declared version plus a digest of the file's text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    version: str
    name: str
    description: str = ""
    scale: Scale
    items: tuple[RubricItem, ...]
    instructions: str = Field("", description="general rating instructions shown to the judge before the items")
    parts: dict[str, str] = Field(default_factory=dict, description="part key -> title, for part subtotals")
    source: str = Field("", description="the file it came from")

    @model_validator(mode="after")
    def _check_items(self) -> Rubric:
        if not self.items:
            raise ValueError("a rubric needs at least one item")
        ids = [item.id for item in self.items]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate item ids: {', '.join(duplicates)}")
        unknown = sorted({i.part for i in self.items if i.part is not None and i.part not in self.parts})
        if unknown:
            raise ValueError(f"item part(s) {', '.join(unknown)} not declared under 'parts'")
        levels = self.scale.levels
        for item in self.items:
            covered: list[int] = []
            for anchor in item.anchors:
                if anchor.low > anchor.high:
                    raise ValueError(f"item {item.id}: anchor range {anchor.low}-{anchor.high} is backwards")
                covered += range(anchor.low, anchor.high + 1)
            if sorted(covered) != levels:
                raise ValueError(
                    f"item {item.id}: anchor ranges must cover each level {self.scale.min}-{self.scale.max} "
                    f"exactly once; they cover {sorted(covered)}"
                )
        return self

    @property
    def item_ids(self) -> list[str]:
        return [item.id for item in self.items]

    def item(self, item_id: str) -> RubricItem:
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(f"rubric {self.id} has no item {item_id!r}; items: {', '.join(self.item_ids)}")

    @property
    def total_range(self) -> tuple[int, int]:
        return len(self.items) * self.scale.min, len(self.items) * self.scale.max

    def allowed_scores(self, item_id: str) -> list[int | str]:
        """The values a judge may give for an item: every level, plus 'n/a' where the item allows it."""
        values: list[int | str] = list(self.scale.levels)
        return values + ["n/a"] if self.item(item_id).allow_na else values

    def scale_text(self) -> str:
        return ", ".join(f"{level} {label}" for level, label in sorted(self.scale.labels.items()))

    def item_text(self, item_id: str, *, anchors: bool = True) -> str:
        """One item as the judge sees it: title, what it rates, and (optionally) its anchors."""
        item = self.item(item_id)
        lines = [f"{item.id} ({item.name}): {item.description}"]
        if anchors:
            lines += [f"  {a.span}: {a.text}" for a in sorted(item.anchors, key=lambda a: a.low)]
        if item.allow_na:
            lines.append("  n/a: allowed only when the session gave no opportunity for this item at all.")
        return "\n".join(lines)

    def items_text(self, item_ids: list[str] | tuple[str, ...], *, anchors: bool = True) -> str:
        """The items block of a judge prompt: the rubric's general instructions, then each item."""
        lines = [self.instructions.strip()] if self.instructions.strip() else []
        return "\n".join(lines + [self.item_text(i, anchors=anchors) for i in item_ids])


def rubric_names() -> list[str]:
    """The shipped rubrics' short names and file stems."""
    stems = sorted(p.stem for p in RUBRICS_DIR.glob("*.yaml"))
    return sorted(RUBRIC_ALIASES) + stems


def load_rubric(name_or_path: str | Path) -> Rubric:
    """A shipped rubric by short name ('paper', 'classic') or file stem, or any rubric file by path."""
    text_name = str(name_or_path)
    stem = RUBRIC_ALIASES.get(text_name, text_name)
    shipped = RUBRICS_DIR / f"{stem}.yaml"
    if isinstance(name_or_path, str) and "/" not in text_name and shipped.is_file():
        return _load_rubric_file(shipped)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _load_rubric_file(path.resolve())
    raise FileNotFoundError(
        f"no rubric named {text_name!r}: not a shipped rubric ({', '.join(rubric_names())}) and not a file"
    )


@cache
def _load_rubric_file(path: Path) -> Rubric:
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a rubric file must be a mapping with id, version, name, scale and items")
    declared = str(document.get("version", "")).strip()
    if not declared:
        raise ValueError(f"{path}: field 'version': a rubric must declare a version")
    try:
        return Rubric.model_validate({**document, "version": content_version(declared, text), "source": str(path)})
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, str(path), document, whole="(top level)")) from exc
