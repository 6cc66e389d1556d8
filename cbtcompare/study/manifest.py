"""The study manifest: what a study output was made from, so the same file and models reproduce it.

manifest.json beside every study output carries the study file verbatim and its sha256, the code version
(git commit, and whether the tree had local changes), each model's spec and weights/adapter sha256, the
version of every prompt, rubric and rules file, and the seeds. It is written atomically (a temporary file
renamed over the old one), so a kill never leaves half a manifest. It never holds a key: model specs are
stored through ModelSpec.public_dict, which names key variables only.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from cbtcompare.ctrs.rubric import Rubric
from cbtcompare.models.base import ChatModel
from cbtcompare.paths import REPO_ROOT
from cbtcompare.patients import attribute_lists, rules
from cbtcompare.prompts import load_prompt
from cbtcompare.redact import redact_url
from cbtcompare.simulate import SEED_SCHEDULE
from cbtcompare.study.spec import StudyFile
from cbtcompare.transcript import utc_now

MANIFEST_FILE = "manifest.json"


def code_version() -> dict[str, object]:
    """The git commit of the code (with a dirty flag), else the package version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("cbtcompare")
    except PackageNotFoundError:
        package = "0.1.0 (not installed)"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return {"git_commit": commit, "local_changes": bool(dirty), "package": package}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "local_changes": None, "package": package}


def prompt_versions() -> dict[str, str]:
    """Every prompt template's content version (name@sha256 prefix)."""
    folder = resources.files("cbtcompare.prompts")
    names = sorted(p.name.removesuffix(".txt") for p in folder.iterdir() if p.name.endswith(".txt"))
    return {name: load_prompt(name).version for name in names}


def write_json_atomically(path: Path, data: object) -> None:
    """Write via a temporary + rename; temporaries a kill -9 left (one writer per study: the run's lock) go."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, ensure_ascii=False, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; these files are meant to be read
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def build_manifest(
    study: StudyFile, *, batch_id: str, rubric: Rubric, models: dict[str, ChatModel], store_url: str
) -> dict[str, object]:
    spec = study.spec
    return {
        "study": {
            "name": spec.name,
            "file": str(study.path),
            "sha256": study.sha256,
            "text": study.text,
        },
        "written_at": utc_now(),
        "code": code_version(),
        "batch_id": batch_id,
        "store": redact_url(store_url),
        "models": {
            name: {"info": asdict(model.info()), "spec": model.spec.public_dict()} for name, model in models.items()
        },
        "arms": {name: {"family": family, "variant": variant} for name, (family, variant) in spec.arm_of().items()},
        "versions": {
            "prompts": prompt_versions(),
            "rubric": {"id": rubric.id, "version": rubric.version},
            "simulation_rules": rules().digest,
            "patient_attributes": attribute_lists().digest,
        },
        "seeds": {
            "run_seed": spec.seed,
            "replicate_seed": "derive_seed(run_seed, 'replicate', profile_id, replicate)",
            "turn_seeds": SEED_SCHEDULE,
            "judge_seed": spec.judging.config.seed,
            "judge_seed_schedule": "seed + 1000 * repeat + attempt",
            "sampled_profiles": spec.profiles.sampled.model_dump() if spec.profiles.sampled else None,
        },
    }
