"""The study file: one YAML document describing a whole study, validated into `StudySpec`.

A study names therapist arms (per model family: the base model, and optionally its tuned and prompted
variants, so the base<->tuned mapping is explicit rather than guessed from names), the patient model,
the profiles, the session design, the judges and the judging mode. Errors name the file, the entry and
the field. Relative paths in the file (profile files, a models file) are read against the file's folder.
This module never loads a model and never touches the store.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cbtcompare.config_errors import format_validation_error
from cbtcompare.ctrs.judge import JudgeConfig
from cbtcompare.models.base import ModelSpec
from cbtcompare.seeds import derive_seed
from cbtcompare.simulate import SummaryPolicy

Variant = Literal["base", "tuned", "prompted"]
VARIANTS: tuple[Variant, ...] = ("base", "tuned", "prompted")
JudgingMode = Literal["absolute", "pairwise", "both"]
Backend = Literal["llamacpp", "hf", "openai", "gemini"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_STUDY_CHARS = 1_000_000  # a study file is a page of YAML; anything this big is a mistake


class StudyFileInvalid(ValueError):
    """A study file that cannot be used; the message names the file, the entry and the field."""


class Arm(BaseModel):
    """One model family: its base (instruct) model and the variants compared against it."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(pattern=NAME_PATTERN, description="the family label used in the report, e.g. llama3.1-8b")
    base: str = Field(description="registry name of the base (instruct) model")
    tuned: str | None = Field(None, description="registry name of the CBT fine-tune (or base + CBT adapter)")
    prompted: str | None = Field(None, description="registry name of the base model with a CBT system prompt")

    def models(self) -> dict[Variant, str]:
        """variant -> registry name, for the variants this arm has."""
        found = {"base": self.base, "tuned": self.tuned, "prompted": self.prompted}
        return {variant: name for variant, name in found.items() if name}  # type: ignore[misc]


class PatientSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="registry name of the model that plays the patient")
    sampling: dict[str, Any] = Field(default_factory=dict, description="overrides, e.g. {max_tokens: 120}")


class SampledProfiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, le=10000, description="how many profiles to draw with the paper's attribute sampler")
    seed: int = Field(0, description="seed of the draw; the same seed gives the same profiles")


class ProfileSelection(BaseModel):
    """Which patients take part: curated ids, a seeded sample, and/or profile files (all are combined)."""

    model_config = ConfigDict(extra="forbid")

    curated: list[str] = Field(default_factory=list, description="ids of shipped or saved profiles")
    sampled: SampledProfiles | None = Field(None, description="N profiles from the seeded attribute sampler")
    files: list[str] = Field(default_factory=list, description="YAML/JSON profile files (relative to the study file)")

    @model_validator(mode="after")
    def _not_empty(self) -> ProfileSelection:
        if not (self.curated or self.sampled or self.files):
            raise ValueError("name at least one profile: curated ids, sampled: {n, seed}, or files")
        return self

    def references(self, folder: Path) -> list[str]:
        """What cbtcompare.patients.load_profile takes: ids, `sampled-<seed>` and absolute file paths."""
        refs = list(self.curated)
        if self.sampled is not None:
            refs += [f"sampled-{derive_seed(self.sampled.seed, 'profile', i)}" for i in range(self.sampled.n)]
        refs += [str(p if (p := Path(f).expanduser()).is_absolute() else (folder / p).resolve()) for f in self.files]
        return refs


class JudgingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    judges: list[str] = Field(min_length=1, description="registry names of the K judge models")
    repeats: int = Field(1, ge=1, le=100, description="R samples per judge and transcript")
    rubric: str = Field("paper", description="paper (the paper's 11 items x 1-10), classic (0-6), or a rubric file")
    mode: JudgingMode = Field(
        "absolute", description="absolute CTRS scores, pairwise comparisons (both orders), or both"
    )
    pairs: list[tuple[Variant, Variant]] = Field(
        default_factory=lambda: [("tuned", "base"), ("prompted", "base")],
        description="which variants of an arm are compared pairwise, as [A, B]; pairs an arm lacks are skipped",
    )
    config: JudgeConfig = Field(
        default_factory=JudgeConfig, description="how each judge is run (cbtcompare.ctrs.JudgeConfig fields)"
    )

    @field_validator("pairs")
    @classmethod
    def _distinct_sides(cls, pairs: list[tuple[Variant, Variant]]) -> list[tuple[Variant, Variant]]:
        for a, b in pairs:
            if a == b:
                raise ValueError(f"a pair compares two different variants; got [{a}, {b}]")
        return pairs

    @property
    def absolute(self) -> bool:
        return self.mode in ("absolute", "both")

    @property
    def pairwise(self) -> bool:
        return self.mode in ("pairwise", "both")


class Throughput(BaseModel):
    """An assumed speed for `study plan` where nothing has been measured yet (e.g. a GPU server not here)."""

    model_config = ConfigDict(extra="forbid")

    tokens_per_second: float = Field(gt=0, description="decode speed of one stream")
    prompt_tokens_per_second: float | None = Field(None, gt=0, description="prefill speed; default 10x decode")
    where: str = Field("", description="the hardware or server the number is for, e.g. 'vLLM on one A100 80GB'")


class Price(BaseModel):
    """What an endpoint charges per token: the summary's and `study plan`'s cost is tokens x these prices."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(ge=0, description="price per million prompt (input) tokens")
    output_per_million: float = Field(ge=0, description="price per million completion (output) tokens")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    source: str = Field("", description="where and when the price was read; prices change, so say so")


class StudySpec(BaseModel):
    """A whole study: arms x profiles x replicates x sessions, judged by K judges x R repeats."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="the study's name; its sessions resume under it")
    description: str = ""
    arms: list[Arm] = Field(min_length=1, description="therapist arms, one per model family")
    patient: PatientSpec
    profiles: ProfileSelection
    sessions: int = Field(1, ge=1, le=50, description="sessions per course (carry-over summary from session 2)")
    turns: int = Field(6, ge=1, le=200, description="therapist turns per session")
    replicates: int = Field(1, ge=1, le=1000, description="independent courses per profile and therapist")
    seed: int = Field(0, description="the run seed every per-turn seed is derived from")
    therapist_sampling: dict[str, Any] = Field(
        default_factory=dict, description="one sampling for every therapist (a fair comparison), e.g. {max_tokens: 200}"
    )
    summary: SummaryPolicy = Field("prompt", description="how a session's carry-over summary is made")
    summary_max_tokens: int = Field(160, ge=1, le=4096)
    judging: JudgingSpec
    concurrency: dict[Backend, int] = Field(
        default_factory=dict,
        description="parallel requests per backend (endpoints only; local llama.cpp/hf models run one at a time)",
    )
    throughput: dict[str, Throughput] = Field(
        default_factory=dict, description="assumed speeds per model name, used by `study plan` until measured"
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="endpoint prices per model name, for the cost in the summary and plan"
    )
    models: list[ModelSpec] | str | None = Field(
        None, description="extra model specs inline, or a models file (relative to the study file)"
    )
    out: str | None = Field(None, description="output folder (default: <data dir>/studies/<name>)")
    db: str | None = Field(None, description="store URL (default: <out>/study.sqlite)")

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        for backend, count in value.items():
            if not 1 <= count <= 256:
                raise ValueError(f"concurrency for {backend} must be 1-256; got {count}")
        return value

    @model_validator(mode="after")
    def _arms_are_distinct(self) -> StudySpec:
        families = [arm.family for arm in self.arms]
        if len(set(families)) != len(families):
            raise ValueError(f"two arms share a family name: {sorted({f for f in families if families.count(f) > 1})}")
        names = [name for arm in self.arms for name in arm.models().values()]
        if len(set(names)) != len(names):
            raise ValueError(
                f"a model appears in two places among the arms: {sorted({n for n in names if names.count(n) > 1})}; "
                "give each variant its own registry name"
            )
        return self

    def therapist_names(self) -> list[str]:
        return [name for arm in self.arms for name in arm.models().values()]

    def arm_of(self) -> dict[str, tuple[str, Variant]]:
        """registry name -> (family, variant): the study's explicit mapping."""
        return {name: (arm.family, variant) for arm in self.arms for variant, name in arm.models().items()}

    def base_tuned_pairs(self) -> list[tuple[str, str]]:
        """(base therapist, tuned therapist) of every arm with a tuned model: the report's explicit pairing."""
        return [(arm.base, arm.tuned) for arm in self.arms if arm.tuned]

    def model_names(self) -> list[str]:
        """Every model the study uses: therapists, the patient, the judges (each once, in that order)."""
        return list(dict.fromkeys([*self.therapist_names(), self.patient.model, *self.judging.judges]))


class StudyFile(BaseModel):
    """A validated study and where it came from: the text is kept so manifests can carry it verbatim."""

    path: Path
    text: str
    spec: StudySpec

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def folder(self) -> Path:
        return self.path.parent


def parse_study(text: str, path: Path | str = "<study>") -> StudyFile:
    """Validate study text; StudyFileInvalid names the file, the entry and the field of every problem."""
    path = Path(path)
    if len(text) > MAX_STUDY_CHARS:
        raise StudyFileInvalid(f"{path}: {len(text)} characters; a study file holds at most {MAX_STUDY_CHARS}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StudyFileInvalid(f"{path}: not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise StudyFileInvalid(f"{path}: nested too deeply to read; a study file is a few levels of YAML") from exc
    if not isinstance(data, dict):
        raise StudyFileInvalid(f"{path}: expected a mapping of study fields (name, arms, patient, ...) at the top")
    try:
        spec = StudySpec.model_validate(data)
    except RecursionError as exc:
        raise StudyFileInvalid(f"{path}: nested too deeply to validate") from exc
    except ValidationError as exc:
        raise StudyFileInvalid(format_validation_error(exc, str(path), data, whole="(the study)")) from exc
    return StudyFile(path=path, text=text, spec=spec)


def load_study(path: Path | str) -> StudyFile:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no study file at {path}; the shipped ones are in studies/ (smoke.yaml, ...)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise StudyFileInvalid(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return parse_study(text, path.resolve())
