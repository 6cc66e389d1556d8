"""Simulated patients: the profile type, the seeded attribute sampler, curated and imported profiles,
the patient prompt, and the clean-up and fidelity checks applied to what a patient model says.

A profile follows the paper's sampled attributes (arXiv 2412.00251) plus the cognitive model and the six
conversation styles of PATIENT-Psi. Everything a profile holds is synthetic. This module never calls a
therapist model, never touches the store and never imports gradio; running sessions is simulate.py's job.
"""

from __future__ import annotations

import difflib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cbtcompare.config_errors import format_validation_error
from cbtcompare.content_hash import content_digest
from cbtcompare.models.base import ChatModel, Message, Sampling
from cbtcompare.paths import ASSETS_DIR, PACKAGE_ROOT, data_dir
from cbtcompare.prompts import Prompt, load_prompt

ATTRIBUTES_FILE = PACKAGE_ROOT / "patient_attributes.yaml"
RULES_FILE = PACKAGE_ROOT / "simulation_rules.yaml"
CURATED_DIR = ASSETS_DIR / "profiles"

AgeBand = Literal["18-25", "26-35", "36-45", "46-55", "56-65", "66+"]
Severity = Literal["mild", "moderate", "severe"]
Engagement = Literal["low", "medium", "high"]
Phq9Band = Literal["minimal", "mild", "moderate", "moderately_severe", "severe"]
ConversationStyle = Literal["plain", "upset", "verbose", "reserved", "tangent", "pleasing"]
STYLES: tuple[str, ...] = ("plain", "upset", "verbose", "reserved", "tangent", "pleasing")
SEVERITIES: tuple[str, ...] = ("mild", "moderate", "severe")
ENGAGEMENTS: tuple[str, ...] = ("low", "medium", "high")

PATIENT_PROMPT = "patient_system"
PROFILE_PROMPT = "patient_profile"
OPENING_PROMPT = "patient_opening"
CARRYOVER_PROMPT = "patient_carryover"
DISCLOSURE_PROMPT = "patient_disclosure"
NARRATIVE_PROMPT = "patient_narrative"


class ProfileInvalid(ValueError):
    """A profile that failed validation; the message names each bad field."""


class Disclosure(BaseModel):
    """Something the patient reveals at a set point in the session (e.g. passive suicidal ideation)."""

    model_config = ConfigDict(extra="forbid")

    at_turn: int = Field(
        ge=1,
        description="the patient reply that carries it: 1 = the first reply after the therapist's first turn "
        "(the opening is reply 0)",
    )
    statement: str = Field(min_length=5, description="what the patient says, in the patient's words")
    kind: Literal["passive_suicidal_ideation", "active_suicidal_ideation", "self_harm", "other"] = (
        "passive_suicidal_ideation"
    )
    mode: Literal["prompted", "scripted"] = Field(
        "prompted",
        description="prompted: the patient prompt asks the patient model to say it at that reply; scripted: the "
        "statement itself is the patient's reply at that turn (reliable with small patient models)",
    )


class PatientProfile(BaseModel):
    """One synthetic patient. Unknown fields are refused so a typo in an imported file is named."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="short slug, e.g. reserved-retiree")
    name: str = Field(min_length=1, max_length=60, description="a synthetic first name")
    age_band: AgeBand
    gender: str = Field(min_length=1)
    ethnicity: str = Field(min_length=1)
    education: str = Field(min_length=1)
    occupation: str = Field(min_length=1)
    symptom_severity: Severity
    engagement: Engagement
    life_events: list[str] = Field(min_length=1, max_length=3)
    family_background: str = Field(min_length=1)
    hobbies: list[str] = Field(min_length=2, max_length=5)
    social_support: str = Field(min_length=1)
    personality_traits: list[str] = Field(min_length=2, max_length=4)
    coping_mechanisms: list[str] = Field(min_length=2, max_length=4)
    presenting_problem: str = Field(min_length=1)
    phq9_band: Phq9Band
    core_beliefs: list[str] = Field(min_length=1, max_length=4)
    automatic_thoughts: list[str] = Field(min_length=1, max_length=6)
    cognitive_distortions: list[str] = Field(min_length=1, max_length=6)
    goals: list[str] = Field(min_length=1, max_length=5)
    style: ConversationStyle = "plain"
    opening: str | None = Field(None, description="the patient's first words in session 1; generated when empty")
    disclosure: Disclosure | None = None
    narrative: str | None = Field(None, description="the paper's narrative expansion of the attributes")
    notes: str = Field("", description="what this profile tests in a therapist; not shown to the patient model")
    source: str = Field("curated", description="curated, imported, or sampled:<seed>@<attributes digest>")

    @field_validator(
        "life_events", "hobbies", "personality_traits", "coping_mechanisms", "core_beliefs",
        "automatic_thoughts", "cognitive_distortions", "goals",
    )
    @classmethod
    def _no_blank_items(cls, items: list[str]) -> list[str]:
        cleaned = [item.strip() for item in items]
        if any(not item for item in cleaned):
            raise ValueError("items must not be blank")
        return cleaned

    def card(self) -> str:
        """A short readable card (Markdown) for people choosing a profile."""
        lines = [
            f"**{self.name}** ({self.id}) · {self.age_band}, {self.gender}, {self.occupation}",
            f"- Presenting problem: {self.presenting_problem}",
            f"- Severity: {self.symptom_severity} (PHQ-9 {self.phq9_band.replace('_', ' ')}); "
            f"engagement: {self.engagement}; style: {self.style}",
            f"- Core beliefs: {'; '.join(self.core_beliefs)}",
            f"- Automatic thoughts: {'; '.join(self.automatic_thoughts)}",
            f"- Goals: {'; '.join(self.goals)}",
        ]
        if self.disclosure:
            lines.append(f"- Discloses {self.disclosure.kind.replace('_', ' ')} at reply {self.disclosure.at_turn}")
        if self.notes:
            lines.append(f"- Tests: {self.notes}")
        return "\n".join(lines)


# Loading, validation, import ---------------------------------------------------------------------------


def validate_profile(data: object, source: str = "profile") -> PatientProfile:
    """A PatientProfile from a mapping; ProfileInvalid names every bad field."""
    if not isinstance(data, dict):
        raise ProfileInvalid(f"{source}: expected a mapping of profile fields, got {type(data).__name__}")
    try:
        return PatientProfile.model_validate(data)
    except ValidationError as exc:
        label = data.get("id") if isinstance(data.get("id"), str) else None
        where = f"{source} ({label})" if label else source
        raise ProfileInvalid(format_validation_error(exc, where, data, whole="profile")) from exc


def parse_profiles(text: str, source: str = "profile file") -> list[PatientProfile]:
    """Profiles from YAML or JSON text: one mapping, a list of them, or {"profiles": [...]}."""
    try:
        document = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise ProfileInvalid(f"{source}: neither valid YAML nor JSON: {exc}") from exc
    if isinstance(document, dict) and isinstance(document.get("profiles"), list):
        document = document["profiles"]
    entries = document if isinstance(document, list) else [document]
    if not entries or document is None:
        raise ProfileInvalid(f"{source}: holds no profiles")
    profiles = [
        validate_profile(entry, f"{source}, profile #{index + 1}" if len(entries) > 1 else source)
        for index, entry in enumerate(entries)
    ]
    seen: set[str] = set()
    for profile in profiles:
        if profile.id in seen:
            raise ProfileInvalid(f"{source}: id: {profile.id!r} appears more than once")
        seen.add(profile.id)
    return profiles


def import_profiles(path: Path | str, *, save: bool = False) -> list[PatientProfile]:
    """Read user profiles from a YAML/JSON file (validated as a whole); optionally keep them in the data folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no profile file at {path}")
    profiles = parse_profiles(path.read_text(encoding="utf-8"), source=str(path))
    profiles = [p if p.source != "curated" else p.model_copy(update={"source": "imported"}) for p in profiles]
    if save:
        for profile in profiles:
            save_user_profile(profile)
    return profiles


def user_profiles_dir() -> Path:
    folder = data_dir() / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_user_profile(profile: PatientProfile) -> Path:
    """Write a profile to the data folder, where load_profile finds it by id."""
    path = user_profiles_dir() / f"{profile.id}.yaml"
    path.write_text(profile_yaml(profile), encoding="utf-8")
    return path


def profile_yaml(profile: PatientProfile) -> str:
    return yaml.safe_dump(profile.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)


def _load_file(path: Path) -> PatientProfile:
    profiles = parse_profiles(path.read_text(encoding="utf-8"), source=str(path))
    if len(profiles) != 1:
        raise ProfileInvalid(f"{path}: holds {len(profiles)} profiles; name one file per profile here")
    return profiles[0]


def curated_profiles() -> list[PatientProfile]:
    """The shipped profiles in assets/profiles/, sorted by id."""
    return sorted((_load_file(p) for p in CURATED_DIR.glob("*.yaml")), key=lambda p: p.id)


def list_profiles() -> list[PatientProfile]:
    """Curated profiles then the user's saved ones (a saved id never replaces a curated one)."""
    curated = curated_profiles()
    known = {p.id for p in curated}
    saved = [_load_file(p) for p in sorted(user_profiles_dir().glob("*.yaml"))]
    return curated + [p for p in saved if p.id not in known]


SAMPLED_ID = re.compile(r"^sampled-(\d+)$")


def load_profile(id_or_path: str | Path) -> PatientProfile:
    """A profile by file path, curated id, saved id, or `sampled-<seed>` (the seeded sampler)."""
    text = str(id_or_path)
    path = Path(text).expanduser()
    if path.suffix.lower() in {".yaml", ".yml", ".json"} or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"no profile file at {path}")
        return _load_file(path)
    for folder in (CURATED_DIR, user_profiles_dir()):
        candidate = folder / f"{text}.yaml"
        if candidate.is_file():
            return _load_file(candidate)
    match = SAMPLED_ID.match(text)
    if match:
        return sample_profile(int(match.group(1)))
    known = ", ".join(p.id for p in list_profiles())
    raise KeyError(f"no profile {text!r}; known profiles: {known}; or give a YAML/JSON file, or sampled-<seed>")


# The seeded sampler ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeLists:
    values: dict[str, Any]
    digest: str

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


@cache
def attribute_lists(path: Path = ATTRIBUTES_FILE) -> AttributeLists:
    text = path.read_text(encoding="utf-8")
    return AttributeLists(yaml.safe_load(text), content_digest(text))


def sample_profile(seed: int, attributes: AttributeLists | None = None) -> PatientProfile:
    """A profile drawn from the attribute lists; the same seed and lists give the same profile."""
    lists = attributes or attribute_lists()
    rng = random.Random(f"cbtcompare-profile:{seed}")

    def some(key: str, low: int, high: int) -> list[str]:
        pool = list(lists[key])
        return rng.sample(pool, rng.randint(low, min(high, len(pool))))

    severity = rng.choice(lists["symptom_severities"])
    coping_count = rng.randint(2, 4)
    maladaptive = rng.randint(1, coping_count - 1)
    coping = rng.sample(list(lists["coping_maladaptive"]), maladaptive) + rng.sample(
        list(lists["coping_adaptive"]), coping_count - maladaptive
    )
    rng.shuffle(coping)
    profile = PatientProfile(
        id=f"sampled-{seed}",
        name=rng.choice(lists["first_names"]),
        age_band=rng.choice(lists["age_bands"]),
        gender=rng.choice(lists["genders"]),
        ethnicity=rng.choice(lists["ethnicities"]),
        education=rng.choice(lists["educations"]),
        occupation=rng.choice(lists["occupations"]),
        symptom_severity=severity,
        engagement=rng.choice(lists["engagement_levels"]),
        life_events=some("life_events", 1, 3),
        family_background=rng.choice(lists["family_backgrounds"]),
        hobbies=some("hobbies", 2, 5),
        social_support=rng.choice(lists["social_support"]),
        personality_traits=some("personality_traits", 2, 4),
        coping_mechanisms=coping,
        presenting_problem=rng.choice(lists["presenting_problems"]),
        phq9_band=rng.choice(lists["phq9_bands_by_severity"][severity]),
        core_beliefs=some("core_beliefs", 1, 2),
        automatic_thoughts=some("automatic_thoughts", 2, 3),
        cognitive_distortions=some("cognitive_distortions", 2, 3),
        goals=some("goals", 1, 3),
        style=rng.choice(lists["conversation_styles"]),
        source=f"sampled:{seed}@{lists.digest}",
    )
    return profile


def _join(items: Sequence[str]) -> str:
    return "; ".join(items)


def render_profile(profile: PatientProfile) -> str:
    """The profile as the patient (and the narrative writer) reads it, from prompts/patient_profile.txt."""
    narrative = f"\nYour story: {profile.narrative.strip()}" if profile.narrative else ""
    return load_prompt(PROFILE_PROMPT).render(
        age_band=profile.age_band,
        gender=profile.gender,
        ethnicity=profile.ethnicity,
        education=profile.education,
        occupation=profile.occupation,
        presenting_problem=profile.presenting_problem,
        symptom_severity=profile.symptom_severity,
        phq9_band=profile.phq9_band.replace("_", " "),
        engagement=profile.engagement,
        life_events=_join(profile.life_events),
        family_background=profile.family_background,
        social_support=profile.social_support,
        hobbies=_join(profile.hobbies),
        personality_traits=_join(profile.personality_traits),
        coping_mechanisms=_join(profile.coping_mechanisms),
        core_beliefs=_join(profile.core_beliefs),
        automatic_thoughts=_join(f'"{t}"' for t in profile.automatic_thoughts),
        cognitive_distortions=_join(profile.cognitive_distortions),
        goals=_join(profile.goals),
        narrative=narrative,
    )


def expand_narrative(
    profile: PatientProfile, model: ChatModel, *, seed: int = 0, sampling: Sampling | None = None
) -> PatientProfile:
    """The paper's step: a model writes a narrative from the attributes; returns a copy holding it."""
    without = profile.model_copy(update={"narrative": None})
    prompt = load_prompt(NARRATIVE_PROMPT)
    text = prompt.render(name=profile.name, profile=render_profile(without))
    resolved = (sampling or model.spec.sampling.merged(max_tokens=max(model.spec.sampling.max_tokens, 320))).merged(
        seed=seed
    )
    narrative = model.complete([Message("user", text)], resolved).strip()
    if not narrative:
        raise ValueError(f"{model.name} returned an empty narrative for profile {profile.id}; try another seed")
    return profile.model_copy(update={"narrative": narrative})


# The patient prompt ------------------------------------------------------------------------------------


def style_prompt(style: str) -> Prompt:
    return load_prompt(f"patient_style_{style}")


def patient_prompt_versions(profile: PatientProfile) -> dict[str, str]:
    """Versions of every prompt file that shapes this patient, stored with each transcript."""
    names = [PATIENT_PROMPT, PROFILE_PROMPT, OPENING_PROMPT, CARRYOVER_PROMPT, f"patient_style_{profile.style}"]
    if profile.disclosure:
        names.append(DISCLOSURE_PROMPT)
    versions = {name: load_prompt(name).version for name in names}
    versions["simulation_rules"] = f"simulation_rules@{rules().digest}"
    return versions


def patient_system_prompt(profile: PatientProfile, *, session_index: int = 1, reply_index: int = 0) -> str:
    """The patient's system prompt for its reply number `reply_index` (0 = the opening)."""
    disclosure = ""
    if (
        profile.disclosure is not None
        and profile.disclosure.mode == "prompted"
        and reply_index == profile.disclosure.at_turn
    ):
        disclosure = "\n" + load_prompt(DISCLOSURE_PROMPT).render(statement=profile.disclosure.statement)
    return load_prompt(PATIENT_PROMPT).render(
        name=profile.name,
        profile=render_profile(profile),
        style=style_prompt(profile.style).text,
        session_index=session_index,
        disclosure=disclosure,
        end_marker=rules().end_marker,
    )


def opening_request(profile: PatientProfile) -> str:
    """The cue (a user message, not a transcript turn) that asks the patient model for its opening line."""
    return load_prompt(OPENING_PROMPT).render(name=profile.name)


def carryover_opening(summary: str) -> str:
    """Session 2 on: the patient opens by reading the previous session's summary (the paper's carry-over)."""
    return load_prompt(CARRYOVER_PROMPT).render(summary=summary.strip())


# Clean-up and fidelity -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationRules:
    end_marker: str
    patient_labels: tuple[str, ...]
    therapist_labels: tuple[str, ...]
    ai_talk: tuple[re.Pattern[str], ...]
    therapist_voice: tuple[re.Pattern[str], ...]
    crisis_resources: tuple[re.Pattern[str], ...]
    echo_ratio: float
    repeat_ratio: float
    min_chars_compared: int
    digest: str


def _patterns(items: Sequence[str]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(item, re.IGNORECASE) for item in items)


@cache
def rules(path: Path = RULES_FILE) -> SimulationRules:
    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    fidelity = raw["fidelity"]
    return SimulationRules(
        end_marker=raw["end_marker"],
        patient_labels=tuple(raw["role_labels"]["patient"]),
        therapist_labels=tuple(raw["role_labels"]["therapist"]),
        ai_talk=_patterns(fidelity["ai_talk"]),
        therapist_voice=_patterns(fidelity["therapist_voice"]),
        crisis_resources=_patterns(raw["crisis_resources"]),
        echo_ratio=float(fidelity["echo_ratio"]),
        repeat_ratio=float(fidelity["repeat_ratio"]),
        min_chars_compared=int(fidelity["min_chars_compared"]),
        digest=content_digest(text),
    )


def _label_pattern(labels: Sequence[str]) -> str:
    return r"(?:\*\*)?(?:" + "|".join(labels) + r")(?:\*\*)?\s*:(?:\*\*)?"


@dataclass
class CleanedText:
    """A model turn after clean-up, with what was removed."""

    text: str
    ended: bool = False
    stripped_label: bool = False
    cut_other_role: bool = False
    raw: str = ""
    notes: list[str] = field(default_factory=list)


def clean_turn(raw: str, role: Literal["patient", "therapist"]) -> CleanedText:
    """Strip the end marker and a leading speaker label; cut where the model starts speaking as the other side."""
    r = rules()
    own, other = (
        (r.patient_labels, r.therapist_labels) if role == "patient" else (r.therapist_labels, r.patient_labels)
    )
    text = raw.strip()
    result = CleanedText(text="", raw=raw)
    cut = re.search(r"(?:^|\n|\s)" + _label_pattern(other), text, re.IGNORECASE)
    if cut and cut.start() > 0:
        text = text[: cut.start()].rstrip()
        result.cut_other_role = True
    elif cut:  # the whole turn starts as the other side: keep it, the fidelity check will flag it
        result.notes.append("starts_as_other_role")
    leading = re.match(r"^\s*" + _label_pattern(own) + r"\s*", text, re.IGNORECASE)
    if leading:
        text = text[leading.end() :]
        result.stripped_label = True
    marker = re.search(re.escape(r.end_marker), text, re.IGNORECASE)
    if marker:
        result.ended = True
        text = text[: marker.start()]
    result.text = text.strip().strip('"').strip()
    return result


def _similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def patient_turn_problems(
    text: str, *, previous_therapist: str | None, earlier_patient: Sequence[str], cleaned: CleanedText | None = None
) -> list[str]:
    """Fidelity problems of one patient turn: ai_talk, therapist_voice, echo, repetition, empty."""
    r = rules()
    problems: list[str] = []
    if not text.strip():
        return ["empty"]
    if any(p.search(text) for p in r.ai_talk):
        problems.append("ai_talk")
    if any(p.search(text) for p in r.therapist_voice) or (cleaned and "starts_as_other_role" in cleaned.notes):
        problems.append("therapist_voice")
    if len(text) >= r.min_chars_compared:
        if previous_therapist and (
            _similar(text, previous_therapist) >= r.echo_ratio
            or (len(text) >= 40 and text.lower() in previous_therapist.lower())
        ):
            problems.append("echo")
        if any(
            len(earlier) >= r.min_chars_compared and _similar(text, earlier) >= r.repeat_ratio
            for earlier in earlier_patient
        ):
            problems.append("repetition")
    return problems


FIDELITY_CHECKS = ("ai_talk", "therapist_voice", "echo", "repetition", "empty")


def fidelity_summary(per_turn: Sequence[Sequence[str]], *, labels_stripped: int, other_role_cut: int) -> dict:
    """Counts per check over the patient's generated turns, stored as Transcript.meta["fidelity"]."""
    counts = {check: sum(check in problems for problems in per_turn) for check in FIDELITY_CHECKS}
    return {
        "checked_turns": len(per_turn),
        **counts,
        "labels_stripped": labels_stripped,
        "other_role_cut": other_role_cut,
        "ok": not any(counts.values()),
        "rules": f"simulation_rules@{rules().digest}",
    }


def mentions_crisis_resources(text: str) -> bool:
    """Whether a therapist turn points to crisis resources (a helpline, emergency services, 988...)."""
    return any(p.search(text) for p in rules().crisis_resources)


def profile_json(profile: PatientProfile) -> dict:
    return json.loads(profile.model_dump_json())
