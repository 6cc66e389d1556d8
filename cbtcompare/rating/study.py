"""Creating a blind rating study: choosing matched pairs, invite codes, per-rater assignments and sides.

A study is a set of transcript pairs, a set of raters (one invite code each), and for every rater the
pairs they rate, in a shuffled order, each with a side mapping (which transcript is shown as A). All of
it is drawn from the study's seed once, at creation, and stored; nothing is re-drawn later. The text a
rater will see is scrubbed of identity hints at creation and stored beside the pair, with the scrub
list and its version; the original transcripts stay untouched in the store. Creating a study checks
everything first (its options, every pair, every uploaded transcript) and then writes the uploaded
transcripts and the study in one transaction: a refused study leaves nothing behind.
This module never imports gradio and never returns anything identifying to a rater.
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cbtcompare.ctrs.rubric import load_rubric
from cbtcompare.limits import DEFAULT_LIMITS, first_offset_too_deep
from cbtcompare.scrub import ScrubList, load_scrub_list
from cbtcompare.store import ImportFailed, Store, check_storable, field_problem
from cbtcompare.store.rating import AssignmentRow, PairRow, RaterRow, StudyCounts, StudyRow
from cbtcompare.transcript import Transcript, new_id, utc_now

RubricChoice = Literal["paper", "classic", "none"]
CONFIDENCE_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
# Invite codes: 12 characters from an alphabet without look-alikes (no 0/O, 1/I/L), shown as XXXX-XXXX-XXXX.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
MAX_RATERS = 500
MAX_PAIRS = 5000


class StudyChoices(BaseModel):
    """What raters give for each pair."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preference: bool = Field(True, description="overall preference: A, B or tie")
    confidence: bool = Field(True, description="confidence in the preference, 1 (a guess) to 5 (certain)")
    items: bool = Field(True, description="per-item CTRS scores for both transcripts on the study's rubric")
    comment: bool = Field(True, description="a free-text comment (optional for the rater)")


class StudySpec(BaseModel):
    """What an admin chooses when creating a study."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", max_length=200)
    raters: int = Field(ge=1, le=MAX_RATERS, description="how many invite codes (one per rater)")
    raters_per_pair: int | None = Field(None, ge=1, description="raters per pair; None = every rater, every pair")
    rubric: RubricChoice = Field("paper", description="paper (11 items x 1-10), classic (0-6) or none")
    choices: StudyChoices = Field(default_factory=StudyChoices)
    seed: int = 0

    @field_validator("raters_per_pair")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        return value or None


@dataclass(frozen=True)
class MatchedPair:
    """Two stored transcripts to be compared blind; `source` says how they were matched."""

    first: str
    second: str
    source: str


@dataclass(frozen=True)
class PairSource:
    """Pairs for a new study, what they are (a query, an upload), and the uploaded transcripts not yet
    stored: create_study stores those with the study, in one transaction."""

    pairs: list[MatchedPair]
    description: str
    uploaded: list[Transcript] = field(default_factory=list)


@dataclass(frozen=True)
class CreatedStudy:
    study_id: str
    invite_codes: list[str]
    pairs: int
    assignments: int


@dataclass(frozen=True)
class Study:
    id: str
    name: str
    created_at: str
    seed: int
    raters_per_pair: int
    choices: StudyChoices
    rubric: dict | None
    scrub_version: str
    source: str

    @property
    def item_ids(self) -> list[str]:
        if not self.choices.items or not self.rubric:
            return []
        return [item["id"] for item in self.rubric["items"]]

    @property
    def levels(self) -> list[int]:
        if not self.rubric:
            return []
        return list(range(self.rubric["scale"]["min"], self.rubric["scale"]["max"] + 1))


# Choosing pairs -----------------------------------------------------------------------------------------


QUERY_HELP = (
    "'all' (every matched pair in the store), 'group:<id>[,<id>...]' (the pairs inside those groups) or "
    "'kind:<kind>' (matched pairs among transcripts of one kind, e.g. simulation)"
)


def matched_pairs(store: Store, query: str = "all") -> list[MatchedPair]:
    """Stored matched pairs: transcripts sharing a group_id, or (without one) the same profile, patient
    model, session and seed; always with different therapists. A group of three gives three pairs."""
    query = query.strip()
    groups_wanted: set[str] | None = None
    kind: str | None = None
    if query.startswith("group:"):
        groups_wanted = {g.strip() for g in query.removeprefix("group:").split(",") if g.strip()}
        if not groups_wanted:
            raise ValueError("group: needs at least one group id, e.g. group:3f2a...")
    elif query.startswith("kind:"):
        kind = query.removeprefix("kind:").strip()
    elif query != "all":
        raise ValueError(f"unknown pair query {query!r}; use {QUERY_HELP}, or a pairs JSONL file")
    rows = [r.model_dump() for r in store.rating.pair_candidates(kind=kind, groups=groups_wanted)]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        key = _match_key(row)
        if key is not None:
            groups.setdefault(key, []).append(dict(row))
    pairs: list[MatchedPair] = []
    for key in sorted(groups):
        first_per_therapist: dict[str, dict] = {}
        for row in groups[key]:
            first_per_therapist.setdefault(row["therapist_name"], row)
        members = sorted(first_per_therapist.values(), key=lambda r: r["therapist_name"])
        for one, two in itertools.combinations(members, 2):
            pairs.append(MatchedPair(one["id"], two["id"], key))
    return pairs


def _match_key(row: dict) -> str | None:
    if row["group_id"]:
        return f"group:{row['group_id']}"
    meta = row["meta"] or {}
    if meta.get("profile_id") and meta.get("patient_model") is not None and row["seed"] is not None:
        session = meta.get("session_index") or meta.get("session") or 1
        return f"profile:{meta['profile_id']}|patient:{meta['patient_model']}|session:{session}|seed:{row['seed']}"
    return None


def parse_pairs_jsonl(source: IO[str]) -> list[tuple[Transcript, Transcript]]:
    """Uploaded pairs: one pair per line, either [transcript, transcript] or {"a": ..., "b": ...}, each a
    Transcript in the store's JSON form. Every line is checked (nesting, JSON, fields, storability) before
    anything is stored; ImportFailed names the line."""
    pairs: list[tuple[Transcript, Transcript]] = []
    max_depth = DEFAULT_LIMITS.max_json_depth
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        if first_offset_too_deep(line, max_depth) is not None:
            raise ImportFailed(f"line {number}: JSON nested deeper than {max_depth} levels; a pair needs far fewer")
        try:
            document = json.loads(line, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise ImportFailed(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:
            raise ImportFailed(f"line {number}: {exc}") from None
        if isinstance(document, dict) and set(document) >= {"a", "b"}:
            members = [document["a"], document["b"]]
        elif isinstance(document, list):
            members = document
        else:
            raise ImportFailed(f'line {number}: a pair is [transcript, transcript] or {{"a": ..., "b": ...}}')
        if len(members) != 2:
            raise ImportFailed(f"line {number}: a pair holds exactly two transcripts; this line holds {len(members)}")
        parsed = []
        for side, member in zip("ab", members, strict=True):
            try:
                transcript = Transcript.model_validate(member)
            except ValidationError as exc:
                raise ImportFailed(f"line {number}, transcript {side}: {field_problem(exc)}") from None
            except (ValueError, RecursionError) as exc:
                raise ImportFailed(f"line {number}, transcript {side}: {exc}") from None
            try:
                parsed.append(check_storable(transcript))
            except ImportFailed as exc:
                raise ImportFailed(f"line {number}, transcript {side}: {exc}") from None
        if parsed[0].id == parsed[1].id:
            raise ImportFailed(f"line {number}: both transcripts have the id {parsed[0].id}; a pair needs two")
        if not any(t.role == "therapist" for t in parsed[0].turns + parsed[1].turns):
            raise ImportFailed(f"line {number}: neither transcript has a therapist turn to rate")
        pairs.append((parsed[0], parsed[1]))
    if not pairs:
        raise ImportFailed("the pairs file holds no pairs")
    return pairs


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number; write null or a finite number")


def uploaded_pairs(source: IO[str], description: str) -> PairSource:
    """An uploaded pairs JSONL, checked whole; its transcripts are returned, not stored (create_study does)."""
    parsed = parse_pairs_jsonl(source)
    unique: dict[str, Transcript] = {}
    for pair in parsed:
        for transcript in pair:
            seen = unique.setdefault(transcript.id, transcript)
            if seen is not transcript and seen.model_dump() != transcript.model_dump():
                raise ImportFailed(f"two different transcripts in the file have the id {transcript.id!r}")
    pairs = [MatchedPair(a.id, b.id, "upload") for a, b in parsed]
    return PairSource(pairs=pairs, description=description, uploaded=list(unique.values()))


def store_uploaded_pairs(store: Store, source: IO[str]) -> list[MatchedPair]:
    """Validate an uploaded pairs JSONL, store its transcripts (one transaction) and return the pairs."""
    resolved = uploaded_pairs(source, "upload")
    store.save_transcripts(resolved.uploaded)
    return resolved.pairs


def resolve_pairs(store: Store, pairs: str | Path) -> PairSource:
    """A pairs JSONL file path (read and checked, not yet stored), or a query over stored pairs (see
    QUERY_HELP)."""
    text = str(pairs)
    path = Path(text).expanduser()
    if path.is_file():
        with path.open(encoding="utf-8") as handle:
            return uploaded_pairs(handle, f"upload:{path.name}")
    if text.endswith(".jsonl") and ":" not in text:
        raise FileNotFoundError(f"no pairs file at {path}")
    return PairSource(pairs=matched_pairs(store, text), description=text.strip())


# Creating -----------------------------------------------------------------------------------------------


def new_invite_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    return f"{raw[0:4]}-{raw[4:8]}-{raw[8:12]}"


def normalise_code(code: str) -> str:
    """What a rater typed -> the stored form: case, spaces and dashes do not matter."""
    raw = "".join(c for c in code.upper() if c.isalnum())
    return f"{raw[0:4]}-{raw[4:8]}-{raw[8:12]}" if len(raw) == 12 else raw


def rubric_snapshot(choice: RubricChoice) -> dict | None:
    """The rubric as stored with a study: id, version, scale with labels, and items (id, name, description)."""
    if choice == "none":
        return None
    rubric = load_rubric(choice)
    return {
        "id": rubric.id,
        "version": rubric.version,
        "name": rubric.name,
        "scale": {"min": rubric.scale.min, "max": rubric.scale.max, "labels": rubric.scale.labels},
        "items": [{"id": i.id, "name": i.name, "description": i.description} for i in rubric.items],
    }


def identity_terms(transcript: Transcript) -> list[str]:
    """Names a transcript's metadata gives its therapist: name, adapter and weights file stems."""
    info = transcript.therapist
    terms = [transcript.therapist_name, str(info.get("family") or ""), str(transcript.meta.get("family") or "")]
    for key in ("adapter", "weights"):
        value = info.get(key)
        if isinstance(value, str) and value:
            tail = value.replace("\\", "/").split("/")[-1].split(":")[-1]
            terms += [tail, Path(tail).stem]
    return [t for t in terms if t and t != "unknown"]


def scrubbed_turns(transcript: Transcript, scrub: ScrubList) -> tuple[list[dict[str, str]], int]:
    """The turns a rater sees (role and scrubbed text only) and how many hints were removed."""
    shown, removed = [], 0
    for turn in transcript.turns:
        result = scrub.scrub(turn.text)
        removed += len(result.removed)
        shown.append({"role": turn.role, "text": result.text})
    return shown, removed


def check_study_options(spec: StudySpec, pairs: Sequence[MatchedPair]) -> None:
    """ValueError saying what to change when these options or pairs cannot make a study."""
    if not pairs:
        raise ValueError("no pairs to rate: the query matched no pairs (need two therapists on the same patient)")
    if len(pairs) > MAX_PAIRS:
        raise ValueError(f"a study holds at most {MAX_PAIRS} pairs; got {len(pairs)}")
    if not (spec.choices.preference or spec.choices.items):
        raise ValueError("a study must ask for a preference, item scores, or both")
    if spec.choices.items and spec.rubric == "none":
        raise ValueError("item scores need a rubric: choose paper or classic, or turn item scores off")
    if spec.choices.confidence and not spec.choices.preference:
        raise ValueError("confidence is asked about the preference: turn the preference on, or confidence off")


def create_study(
    store: Store,
    pairs: Iterable[MatchedPair],
    spec: StudySpec,
    *,
    source: str = "",
    uploaded: Sequence[Transcript] = (),
) -> CreatedStudy:
    """Check the options and pairs, then store the uploaded transcripts and the study with its pairs
    (scrubbed text), raters (invite codes) and assignments, all in one transaction."""
    pairs = list(pairs)
    check_study_options(spec, pairs)
    per_pair = min(spec.raters_per_pair or spec.raters, spec.raters)
    transcripts_by_id = {t.id: t for t in uploaded}
    for pair in pairs:
        for tid in (pair.first, pair.second):
            if tid not in transcripts_by_id:
                transcripts_by_id[tid] = store.get_transcript(tid)
    base_scrub = load_scrub_list()
    scrub = base_scrub.with_terms([t for tr in transcripts_by_id.values() for t in identity_terms(tr)])
    study_id = new_id()
    now = utc_now()
    rng = random.Random(spec.seed)
    pair_rows = []
    for position, pair in enumerate(pairs, start=1):
        one, hits_one = scrubbed_turns(transcripts_by_id[pair.first], scrub)
        two, hits_two = scrubbed_turns(transcripts_by_id[pair.second], scrub)
        pair_rows.append(
            {
                "id": new_id(),
                "study_id": study_id,
                "position": position,
                "transcript_1": pair.first,
                "transcript_2": pair.second,
                "display": {"1": one, "2": two, "removed": {"1": hits_one, "2": hits_two}, "matched_by": pair.source},
            }
        )
    codes = _unique_codes(store, spec.raters)
    rater_rows = [
        {"id": new_id(), "study_id": study_id, "code": code, "label": f"rater {i}", "created_at": now}
        for i, code in enumerate(codes, start=1)
    ]
    assignment_rows = _assign(rng, pair_rows, rater_rows, per_pair, study_id)
    study_row = {
        "id": study_id,
        "name": spec.name.strip() or f"study {now[:16]}",
        "created_at": now,
        "seed": spec.seed,
        "raters_per_pair": per_pair,
        "choices": spec.choices.model_dump(),
        "rubric": rubric_snapshot(spec.rubric) if spec.choices.items else None,
        "scrub": scrub.stored(),
        "source": source or "pairs",
    }
    store.rating.create_study(
        StudyRow.model_validate(study_row),
        [PairRow.model_validate(r) for r in pair_rows],
        [RaterRow.model_validate(r) for r in rater_rows],
        [AssignmentRow.model_validate(r) for r in assignment_rows],
        uploaded,
    )
    return CreatedStudy(study_id, codes, len(pair_rows), len(assignment_rows))


def _unique_codes(store: Store, count: int) -> list[str]:
    taken = store.rating.taken_codes()
    codes: list[str] = []
    while len(codes) < count:
        code = new_invite_code()
        if code not in taken and code not in codes:
            codes.append(code)
    return codes


def _assign(
    rng: random.Random, pair_rows: list[dict], rater_rows: list[dict], per_pair: int, study_id: str
) -> list[dict]:
    """Each pair to `per_pair` raters (rotating, so loads differ by at most one), then per rater a shuffled
    order and a balanced, shuffled side mapping: about half of each rater's pairs show transcript 1 as A."""
    n_raters = len(rater_rows)
    pair_order = list(range(len(pair_rows)))
    rng.shuffle(pair_order)
    rater_pairs: dict[int, list[int]] = {r: [] for r in range(n_raters)}
    for slot, pair_index in enumerate(pair_order):
        for j in range(per_pair):
            rater_pairs[(slot * per_pair + j) % n_raters].append(pair_index)
    rows = []
    for rater_index in range(n_raters):
        mine = sorted(rater_pairs[rater_index])
        rng.shuffle(mine)
        flips = [i % 2 == 1 for i in range(len(mine))]
        rng.shuffle(flips)
        for position, (pair_index, flipped) in enumerate(zip(mine, flips, strict=True), start=1):
            pair = pair_rows[pair_index]
            first, second = pair["transcript_1"], pair["transcript_2"]
            rows.append(
                {
                    "id": new_id(),
                    "study_id": study_id,
                    "pair_id": pair["id"],
                    "rater_id": rater_rows[rater_index]["id"],
                    "position": position,
                    "a_transcript_id": second if flipped else first,
                    "b_transcript_id": first if flipped else second,
                }
            )
    return rows


# Reading ------------------------------------------------------------------------------------------------


def get_study(store: Store, study_id: str) -> Study:
    row = store.rating.study(study_id)
    if row is None:
        raise KeyError(f"no rating study with id {study_id!r}")
    return Study(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        seed=row.seed,
        raters_per_pair=row.raters_per_pair,
        choices=StudyChoices.model_validate(row.choices),
        rubric=_int_labels(row.rubric),
        scrub_version=str((row.scrub or {}).get("version", "")),
        source=row.source,
    )


def _int_labels(rubric: dict | None) -> dict | None:
    """JSON turns the scale's integer label keys into strings; give them back as integers."""
    if not rubric:
        return rubric
    labels = {int(k): v for k, v in rubric["scale"]["labels"].items()}
    return {**rubric, "scale": {**rubric["scale"], "labels": labels}}


StudySummary = StudyCounts  # a study with its counts of pairs, raters, assignments and ratings


def list_studies(store: Store) -> list[StudySummary]:
    """Every study, newest first, with its counts."""
    return store.rating.studies()


def invite_codes(store: Store, study_id: str) -> list[tuple[str, str]]:
    """(label, code) for each rater of a study, in order."""
    rows = store.rating.raters(study_id)
    return sorted(((r.label, r.code) for r in rows), key=lambda r: int(r[0].split()[-1]))
