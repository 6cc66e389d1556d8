"""Base <-> tuned therapist pairs from the model registry, for reports outside a study.

A study's arms name its pairs (StudySpec.base_tuned_pairs). Outside a study (a report over stored scores)
the registry knows which base a tuned adapter belongs to: the base spec on the same weights with no
adapter. A tuned model that two base specs could claim is refused with a message naming them; a merged
fine-tune (weights no base shares) is not paired here and is left to its family
(cbtcompare.stats.resolve_pairing with rest_by_family). Never loads a model.
"""

from __future__ import annotations

from collections.abc import Iterable

from cbtcompare.models.base import ModelError, ModelSpec
from cbtcompare.models.registry import Registry
from cbtcompare.provenance import variant_of


class AmbiguousPairing(ValueError):
    """A tuned therapist whose base cannot be told from the registry; the message names the candidates."""


def registry_pairs(registry: Registry, therapists: Iterable[str]) -> list[tuple[str, str]]:
    """(base, tuned) for every tuned adapter among `therapists` whose weights exactly one base among them
    shares; names the registry does not know are skipped."""
    specs: dict[str, ModelSpec] = {}
    for name in dict.fromkeys(therapists):
        try:
            specs[name] = registry.spec(name)
        except ModelError:
            continue
    bases = [name for name, spec in specs.items() if variant_of(spec) == "base"]
    pairs = []
    for name, spec in specs.items():
        if not spec.adapter or variant_of(spec) != "tuned":
            continue
        candidates = sorted(base for base in bases if specs[base].weights == spec.weights)
        if len(candidates) > 1:
            raise AmbiguousPairing(
                f"tuned therapist {name} is an adapter on weights that {len(candidates)} base therapists share "
                f"({', '.join(candidates)}): name its pair (CLI: --pair {candidates[0]}={name})"
            )
        if candidates:
            pairs.append((candidates[0], name))
    return pairs
