"""The one formatter of configuration errors: file, entry and field for every problem, in one line each.

Used by every loader of YAML/JSON configuration (study files, training configs, rule sets, models files)
so a person always reads the same shape: `FILE: ENTRY.FIELD: what is wrong (got VALUE)`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

_GOT_CHARS = 60
_LABEL_KEYS = ("name", "id", "family", "kind")


def _where(data: Any, loc: tuple[Any, ...]) -> str:
    """`arms[1] (name 'x').temperature`: list positions labelled by the entry's name where it has one."""
    parts: list[str] = []
    node = data
    for step in loc:
        if isinstance(step, int):
            label = ""
            entry = node[step] if isinstance(node, list) and 0 <= step < len(node) else None
            if isinstance(entry, dict):
                key = next((k for k in _LABEL_KEYS if isinstance(entry.get(k), str)), None)
                label = f" ({key} {entry[key]!r})" if key else ""
            parts.append(f"[{step}]{label}")
            node = entry
        else:
            parts.append(("." if parts else "") + str(step))
            node = node.get(step) if isinstance(node, dict) else None
    return "".join(parts)


def _got(error: dict[str, Any]) -> str:
    if "input" not in error or error.get("type") == "missing":
        return ""
    shown = repr(error["input"])
    return f" (got {shown if len(shown) <= _GOT_CHARS else shown[: _GOT_CHARS - 3] + '...'})"


def describe_validation_error(exc: ValidationError, source: str, data: Any = None, whole: str = "config") -> list[str]:
    """One line per problem: `source: where: message (got value)`; `data` labels list entries by name."""
    lines = []
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith(("list[", "tuple[", "dict["))))
        where = _where(data, loc) if data is not None else ".".join(str(p) for p in loc)
        lines.append(f"{source}: {where or whole}: {error['msg'][:1].lower() + error['msg'][1:]}{_got(error)}")
    return lines


def format_validation_error(exc: ValidationError, source: str, data: Any = None, whole: str = "config") -> str:
    """The lines of `describe_validation_error` joined with '; ' (for one-line errors)."""
    return "; ".join(describe_validation_error(exc, source, data, whole))
