"""Turn annotations shared by every kind of session: safety flags and CBT technique tags.

The one place a turn is checked (crisis language, harmful replies) and tagged (techniques), and the
versions of the rule files that did it, stored beside each transcript. People's turns are screened by the
rules and the embedding classifier (recall first); simulated patients' turns by the deterministic rules alone,
since a false alarm there ends a session early and runs must reproduce exactly.
"""

from __future__ import annotations

from cbtcompare.safety import flag_turn, rules_version
from cbtcompare.techniques import RULES_VERSION, tag_turn
from cbtcompare.transcript import Turn


def annotate_turn(turn: Turn, *, use_classifier: bool = True) -> Turn:
    """A copy of the turn with safety flags, and technique tags on therapist turns."""
    turn = flag_turn(turn, use_classifier=use_classifier)
    if turn.role == "therapist":
        turn.flags["techniques"] = [tag.id for tag in tag_turn(turn.text)]
    return turn


def annotation_versions(**versions: str) -> dict[str, str]:
    """Prompt versions plus the versions of the rule files that annotate turns (safety, techniques)."""
    from cbtcompare.safety_classifier import classifier_version

    return {
        **versions,
        "safety_rules": rules_version(),
        "safety_classifier": classifier_version(),
        "technique_rules": RULES_VERSION,
    }
