"""A study's plan: where it lives, which models it needs (and which are missing), what is done, what is due,
and how long the rest should take.

Everything here reads: the study file, the registry's specs, the Hugging Face cache and the store. It
never loads a model, never downloads anything and never writes to the store, so `study plan` and
`study status` are safe to run anywhere, also beside a running study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from cbtcompare.ctrs.batch import compared_repeats, scored_repeats
from cbtcompare.ctrs.judge import JudgeConfig
from cbtcompare.ctrs.rubric import Rubric, load_rubric
from cbtcompare.models.base import ModelError, ModelSpec
from cbtcompare.models.registry import Registry, backend_capabilities, load_spec_file
from cbtcompare.models.weights import check_gguf, parse_hf_reference
from cbtcompare.paths import data_dir
from cbtcompare.patients import PatientProfile, load_profile
from cbtcompare.quality import QualityVerdict, check_transcript
from cbtcompare.simulate import FINISHED, BatchConfig, plan_batch
from cbtcompare.simulate.batch import sessions_at_once
from cbtcompare.store import Store
from cbtcompare.study.cost import endpoint_costs, read_usage_ledger
from cbtcompare.study.spec import StudyFile, Variant

USAGE_FILE = "usage.jsonl"
DEFAULT_PREFILL_FACTOR = 10.0  # prompt tokens are processed this many times faster than decoded, unless told


class StudyNotReady(ValueError):
    """Models the study needs are missing here; the message lists each one and what to do."""


# Where things are -------------------------------------------------------------------------------------


def output_folder(study: StudyFile, out: Path | str | None = None) -> Path:
    """--out, else the file's `out` (relative to the current folder), else <data dir>/studies/<name>."""
    chosen = out or study.spec.out
    return Path(chosen).expanduser().resolve() if chosen else data_dir() / "studies" / study.spec.name


def store_for(study: StudyFile, out: Path, *, create: bool = True) -> Store:
    """The study's store; with create=False a study that never ran gets an empty throwaway store, so
    `study plan` and `study status` leave no file behind."""
    url = study.spec.db or f"sqlite:///{out / 'study.sqlite'}"
    if not create and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        import tempfile

        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='cbtcompare-plan-')) / 'empty.sqlite'}"
    return Store(url)


def build_registry(study: StudyFile) -> Registry:
    """The shipped models (plus CBTCOMPARE_MODELS) and the study's own models, which replace same names."""
    registry = Registry.from_files()
    models = study.spec.models
    extra: list[ModelSpec] = []
    if isinstance(models, str):
        path = Path(models).expanduser()
        extra = load_spec_file(path if path.is_absolute() else study.folder / path)
    elif models:
        extra = list(models)
    for spec in extra:
        registry.add(spec)
    return registry


def batch_config(study: StudyFile, registry: Registry) -> BatchConfig:
    """The study's sessions as one simulation batch (cbtcompare.simulate), resumed under the study's name."""
    spec = study.spec
    names = [*spec.therapist_names(), spec.patient.model]
    backends = {registry.spec(name).backend for name in names}
    remote = [b for b in backends if backend_capabilities(b).remote]
    concurrency = min((spec.concurrency.get(b, 4) for b in remote), default=1)  # type: ignore[call-overload]
    return BatchConfig(
        name=spec.name,
        profiles=spec.profiles.references(study.folder),
        therapists=spec.therapist_names(),
        patient=spec.patient.model,
        replicates=spec.replicates,
        turns=spec.turns,
        sessions=spec.sessions,
        seed=spec.seed,
        concurrency=concurrency,
        therapist_sampling=spec.therapist_sampling,
        patient_sampling=spec.patient.sampling,
        summary=spec.summary,
        summary_max_tokens=spec.summary_max_tokens,
    )


def profiles_of(config: BatchConfig) -> list[PatientProfile]:
    profiles = [load_profile(ref) for ref in config.profiles]  # type: ignore[union-attr]
    ids = [p.id for p in profiles]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the study names a profile twice: {', '.join(sorted({i for i in ids if ids.count(i) > 1}))}")
    return profiles


def rubric_of(study: StudyFile) -> Rubric:
    reference = study.spec.judging.rubric
    path = Path(reference).expanduser()
    if path.suffix in {".yaml", ".yml", ".json"} and not path.is_absolute():
        reference = str(study.folder / path)
    return load_rubric(reference)


# Which models are here --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelReadiness:
    name: str
    roles: tuple[str, ...]
    backend: str
    available: bool
    reason: str


def _hub_reason(reference: str) -> str | None:
    """None when an hf: file is in the local cache; else what is missing. Never downloads."""
    from huggingface_hub import try_to_load_from_cache

    try:
        repo, filename = parse_hf_reference(reference)
    except ModelError as exc:
        return str(exc)
    cached = try_to_load_from_cache(repo_id=repo, filename=filename)
    if isinstance(cached, str):
        try:
            check_gguf(Path(cached)) if filename.endswith(".gguf") else None
        except ModelError as exc:
            return str(exc)
        return None
    return (
        f"{filename} from {repo} is not downloaded here ({reference}); `study run` would download it, or fetch it "
        f"first with `huggingface-cli download {repo} {filename}`"
    )


def readiness(study: StudyFile, registry: Registry) -> list[ModelReadiness]:
    """Every model the study uses, whether it can run here, and if not, why (without loading anything)."""
    spec = study.spec
    roles: dict[str, list[str]] = {}
    for name in spec.therapist_names():
        roles.setdefault(name, []).append("therapist")
    roles.setdefault(spec.patient.model, []).append("patient")
    for name in spec.judging.judges:
        roles.setdefault(name, []).append("judge")
    found = []
    for name, model_roles in roles.items():
        try:
            model_spec = registry.spec(name)
        except ModelError as exc:
            found.append(ModelReadiness(name, tuple(model_roles), "?", False, str(exc)))
            continue
        hub_refs = [ref for ref in (model_spec.weights, model_spec.adapter) if ref and ref.startswith("hf:")]
        if model_spec.backend == "llamacpp" and hub_refs:
            reasons = [reason for ref in hub_refs if (reason := _hub_reason(ref))]
            found.append(ModelReadiness(name, tuple(model_roles), model_spec.backend, not reasons, "; ".join(reasons)))
            continue
        availability = registry.availability(name)
        found.append(
            ModelReadiness(name, tuple(model_roles), availability.backend, availability.available, availability.reason)
        )
    return found


def require_ready(study: StudyFile, registry: Registry) -> None:
    missing = [m for m in readiness(study, registry) if not m.available]
    if missing:
        lines = "; ".join(f"{m.name} ({'/'.join(m.roles)}): {m.reason}" for m in missing)
        raise StudyNotReady(f"{study.path}: {len(missing)} model(s) are not available here: {lines}")


# What is done -----------------------------------------------------------------------------------------


@dataclass
class StageCount:
    total: int
    done: int

    @property
    def due(self) -> int:
        return max(self.total - self.done, 0)

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "done": self.done, "due": self.due}


@dataclass
class StudyState:
    """The study against its store: sessions finished, their quality verdicts, and the judgements due."""

    batch_id: str
    out: Path
    sessions: StageCount
    transcript_ids: list[str]
    verdicts: dict[str, QualityVerdict]
    pairs: list[tuple[str, str, str]]  # (transcript_a, transcript_b, "family: A vs B")
    absolute: StageCount
    pairwise: StageCount
    report: Path
    failed_sessions: list[str] = field(default_factory=list)

    @property
    def judgeable(self) -> list[str]:
        """Finished sessions that passed the quality gate."""
        return [t for t in self.transcript_ids if not self.verdicts[t].flagged]

    def as_dict(self) -> dict[str, object]:
        flagged = sum(v.flagged for v in self.verdicts.values())
        return {
            "batch_id": self.batch_id,
            "out": str(self.out),
            "sessions": self.sessions.as_dict(),
            "quarantined": flagged,
            "absolute": self.absolute.as_dict(),
            "pairwise": self.pairwise.as_dict(),
            "report": str(self.report) if self.report.is_file() else None,
            "failed_sessions": self.failed_sessions,
        }


def matched_pairs(study: StudyFile, store: Store, transcript_ids: list[str]) -> list[tuple[str, str, str]]:
    """Per arm and per configured variant pair, the two transcripts of one matched group (same patient,
    opening, seeds and session), both past the quality gate; A is the pair's first variant."""
    arm_of = study.spec.arm_of()
    by_group: dict[str, dict[tuple[str, Variant], str]] = {}
    for transcript_id in transcript_ids:
        transcript = store.get_transcript(transcript_id)
        family_variant = arm_of.get(transcript.therapist_name)
        if family_variant is not None and transcript.group_id:
            by_group.setdefault(transcript.group_id, {})[family_variant] = transcript_id
    pairs = []
    for group in by_group.values():
        for arm in study.spec.arms:
            for variant_a, variant_b in study.spec.judging.pairs:
                a, b = group.get((arm.family, variant_a)), group.get((arm.family, variant_b))
                if a and b:
                    pairs.append((a, b, f"{arm.family}: {variant_a} vs {variant_b}"))
    return pairs


def pairs_per_group(study: StudyFile) -> int:
    return sum(
        1
        for arm in study.spec.arms
        for variant_a, variant_b in study.spec.judging.pairs
        if variant_a in arm.models() and variant_b in arm.models()
    )


def study_state(study: StudyFile, out: Path, registry: Registry, store: Store) -> StudyState:
    spec = study.spec
    config = batch_config(study, registry)
    courses = plan_batch(config, profiles_of(config))
    total_sessions = sum(len(course) for course in courses)
    runs = store.batch_runs(config.batch_id)
    finished = [r for r in runs.values() if r.status in FINISHED]
    transcript_ids = sorted(r.transcript_id for r in finished if r.transcript_id)
    verdicts = {tid: check_transcript(store.get_transcript(tid)) for tid in transcript_ids}
    passed = [t for t in transcript_ids if not verdicts[t].flagged]
    judging = spec.judging
    rubric = rubric_of(study)
    k_r = len(judging.judges) * judging.repeats
    # Until every session has run, count what the unrun ones will need as well.
    unrun = total_sessions - len(finished)
    absolute = StageCount(0, 0)
    if judging.absolute:
        done = 0
        for tid in passed:
            transcript = store.get_transcript(tid)
            for judge in judging.judges:
                done += len(
                    {r for r in scored_repeats(store, transcript, judge, rubric, judging.config) if r < judging.repeats}
                )
        absolute = StageCount((len(passed) + unrun) * k_r, done)
    pairs = matched_pairs(study, store, passed) if judging.pairwise else []
    pairwise = StageCount(0, 0)
    if judging.pairwise:
        done = 0
        for judge in judging.judges:
            judged = compared_repeats(store, judge, rubric, judging.config)
            done += sum(len({r for r in judged.get((a, b), set()) if r < judging.repeats}) for a, b, _ in pairs)
        groups_unrun = unrun // max(len(spec.therapist_names()), 1)
        pairwise = StageCount((len(pairs) + groups_unrun * pairs_per_group(study)) * k_r, done)
    return StudyState(
        batch_id=config.batch_id,
        out=out,
        sessions=StageCount(total_sessions, len(finished)),
        transcript_ids=transcript_ids,
        verdicts=verdicts,
        pairs=pairs,
        absolute=absolute,
        pairwise=pairwise,
        report=out / "report" / "index.html",
        failed_sessions=[f"{key}: {r.error}" for key, r in runs.items() if r.status == "failed"],
    )


# How long the rest takes ------------------------------------------------------------------------------


@dataclass
class Speed:
    tokens_per_second: float
    prompt_tokens_per_second: float
    source: str


def measured_speeds(store: Store, out: Path) -> dict[tuple[str, str], Speed]:
    """Effective speed (reply tokens per second of wall time, prompt processing included) per (model, role)
    from the study's own usage log, which every stage appends to."""
    return {
        key: Speed(
            t.completion_tokens / t.seconds,
            math.inf,
            f"measured here ({t.completion_tokens:.0f} tokens in {t.seconds:.0f} s)",
        )
        for key, t in read_usage_ledger(out / USAGE_FILE).items()
        if t.completion_tokens > 0 and t.seconds > 0
    }


def is_remote(registry: Registry, name: str) -> bool:
    """Whether the model named `name` is an endpoint (its backend's capability flag); False when unknown."""
    try:
        return backend_capabilities(registry.spec(name).backend).remote
    except ModelError:
        return False


@dataclass
class RoleEstimate:
    model: str
    role: str
    calls: int
    completion_tokens: int
    prompt_tokens: int
    seconds: float | None
    speed_source: str
    parallel: int
    cost: float | None = None  # endpoints with a price in the study file; the same upper-bound tokens
    currency: str = ""


def estimate(study: StudyFile, state: StudyState, registry: Registry, store: Store) -> list[RoleEstimate]:
    """Time for what is due, per model and role: decode tokens / tokens per second plus prompt tokens /
    prefill speed, divided by the parallel requests an endpoint takes. Speeds come from this study's own
    measurements, else the study file's `throughput`, else they are unknown (and said so)."""
    spec = study.spec
    measured = measured_speeds(store, state.out)
    assumed_speeds: dict[str, Speed] = {}
    for name, assumed in spec.throughput.items():
        prefill = assumed.prompt_tokens_per_second or assumed.tokens_per_second * DEFAULT_PREFILL_FACTOR
        where = f" on {assumed.where}" if assumed.where else ""
        assumed_speeds[name] = Speed(assumed.tokens_per_second, prefill, f"assumed in the study file{where}")

    def budget(overrides: dict, name: str) -> int:
        try:
            default = registry.spec(name).sampling.max_tokens
        except ModelError:
            default = 256
        return int(overrides.get("max_tokens", default))

    therapist_tokens = budget(spec.therapist_sampling, spec.therapist_names()[0])
    patient_tokens = budget(spec.patient.sampling, spec.patient.model)
    session_tokens = spec.turns * (therapist_tokens + patient_tokens)
    sessions_due = state.sessions.due // max(len(spec.therapist_names()), 1)
    rows: list[tuple[str, str, int, int, int]] = []  # model, role, calls, completion, prompt tokens
    # summary "prompt": after every session the therapist writes the carry-over summary, reading it all
    summary_calls = sessions_due if spec.summary == "prompt" else 0
    for name in spec.therapist_names():
        # Each turn re-reads the conversation so far: on average half a session.
        calls = sessions_due * spec.turns
        completion = calls * therapist_tokens + summary_calls * spec.summary_max_tokens
        prompt = calls * session_tokens // 2 + summary_calls * session_tokens
        rows.append((name, "therapist", calls + summary_calls, completion, prompt))
    patient_calls = state.sessions.due * max(spec.turns - 1, 0)
    patient_prompt = patient_calls * session_tokens // 2
    rows.append((spec.patient.model, "patient", patient_calls, patient_calls * patient_tokens, patient_prompt))
    config: JudgeConfig = spec.judging.config
    items = len(rubric_of(study).item_ids)
    calls_per_judgement = items if config.mode == "per-item" else 1
    reply = config.reply_budget(1 if config.mode == "per-item" else items)
    rubric_prompt = 2500
    per_judge_abs = state.absolute.due // max(len(spec.judging.judges), 1)
    per_judge_pair = state.pairwise.due // max(len(spec.judging.judges), 1)
    for name in spec.judging.judges:
        calls = (per_judge_abs + 2 * per_judge_pair) * calls_per_judgement
        prompt = calls * (rubric_prompt + session_tokens) + per_judge_pair * 2 * calls_per_judgement * session_tokens
        rows.append((name, "judge", calls, calls * reply, prompt))
    # As many sessions at once as run_batch runs (the one rule, sessions_at_once); only an endpoint's time
    # divides by them: local models share this machine's cores however many sessions overlap.
    try:
        session_models = [*spec.therapist_names(), spec.patient.model]
        session_parallel = sessions_at_once(
            batch_config(study, registry).concurrency,
            [backend_capabilities(registry.spec(n).backend) for n in session_models],
        )
    except ModelError:
        session_parallel = 1
    estimates = []
    for name, role, calls, completion, prompt in rows:
        try:
            backend = registry.spec(name).backend
        except ModelError:
            backend = "?"
        if not is_remote(registry, name):
            parallel = 1
        elif role == "judge":
            parallel = spec.concurrency.get(backend, 4)  # type: ignore[call-overload]
        else:
            parallel = session_parallel
        speed = measured.get((name, role)) or assumed_speeds.get(name)
        seconds = None
        if speed is not None:
            seconds = (completion / speed.tokens_per_second + prompt / speed.prompt_tokens_per_second) / parallel
        estimate_row = RoleEstimate(
            name, role, calls, completion, prompt, seconds, speed.source if speed else "unknown", parallel
        )
        price = spec.prices.get(name)
        if price is not None and is_remote(registry, name):
            estimate_row.cost = round(
                prompt / 1e6 * price.input_per_million + completion / 1e6 * price.output_per_million, 2
            )
            estimate_row.currency = price.currency
        estimates.append(estimate_row)
    return estimates


# The plan as data and as text (the CLI and the Study tab show the same) ------------------------------


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plan_study(study: StudyFile, out: Path | str | None = None) -> dict[str, object]:
    """What `study plan --json` prints: the state, every model's readiness, and the estimate for what is due."""
    folder = output_folder(study, out)
    registry = build_registry(study)
    store = store_for(study, folder, create=False)
    state = study_state(study, folder, registry, store)
    models = readiness(study, registry)
    estimates = estimate(study, state, registry, store)
    known = [e.seconds for e in estimates if e.seconds is not None]
    return {
        "study": study.spec.name,
        "file": str(study.path),
        **state.as_dict(),
        "models": [
            {
                "name": m.name,
                "roles": list(m.roles),
                "backend": m.backend,
                "available": m.available,
                "missing": m.reason,
            }  # fmt: skip
            for m in models
        ],
        "ready": all(m.available for m in models),
        "estimate": [e.__dict__ for e in estimates],
        "estimated_seconds": sum(known) if len(known) == len(estimates) else None,
        "estimated_seconds_known_part": sum(known),
        "estimated_cost": _cost_total(estimates),
    }


def _cost_total(estimates: list[RoleEstimate]) -> dict[str, float]:
    """currency -> the endpoints' estimated cost (models without a price are not in it)."""
    totals: dict[str, float] = {}
    for e in estimates:
        if e.cost is not None:
            totals[e.currency] = round(totals.get(e.currency, 0.0) + e.cost, 2)
    return totals


def study_costs(study: StudyFile, out: Path, registry: Registry) -> list[dict[str, object]]:
    """The cost so far of the study's endpoint models, from its usage ledger (cbtcompare.study.cost)."""
    totals = read_usage_ledger(out / USAGE_FILE).values()
    rows = endpoint_costs(totals, study.spec.prices, lambda name: is_remote(registry, name))
    return [row.model_dump() for row in rows]


def plan_lines(plan: dict) -> list[str]:
    lines = [f"study {plan['study']} ({plan['file']}); output {plan['out']}"]
    for stage in ("sessions", "absolute", "pairwise"):
        counts = plan[stage]
        lines.append(f"  {stage:9} {counts['due']} due of {counts['total']}")
    lines.append("models:")
    for m in plan["models"]:
        lines.append(
            f"  {'ok     ' if m['available'] else 'MISSING'} {m['name']} ({'/'.join(m['roles'])}, {m['backend']})"
            + ("" if m["available"] else f": {m['missing']}")
        )
    lines.append("estimate (token counts are upper bounds from max_tokens):")
    for e in plan["estimate"]:
        cost = "" if e["cost"] is None else f", about {e['cost']:.2f} {e['currency']}"
        lines.append(
            f"  {e['role']:9} {e['model']}: {e['calls']} calls, {e['completion_tokens']} tokens out, "
            f"{e['prompt_tokens']} in, x{e['parallel']} parallel -> {duration_text(e['seconds'])} ({e['speed_source']})"
            f"{cost}"
        )
    total = plan["estimated_seconds"]
    known = "" if total is not None else f" (known part {duration_text(plan['estimated_seconds_known_part'])})"
    lines.append(f"total: {duration_text(total)}{known}")
    if plan["estimated_cost"]:
        costs = ", ".join(f"{amount:.2f} {currency}" for currency, amount in plan["estimated_cost"].items())
        lines.append(f"endpoint cost (upper bound, at the study file's prices): {costs}")
    return lines
