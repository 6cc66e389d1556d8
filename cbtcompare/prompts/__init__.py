"""Prompt templates live here as text files; this module loads them with a content-derived version.

A prompt's version is its file name plus the first 12 hex digits of the sha256 of its text, so any edit
gives a new version, and the version stored beside a result always names the exact text used.
Templates use `string.Template` placeholders (`$name`), never str.format, so braces in JSON examples
and in transcripts are safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

from cbtcompare.content_hash import content_version


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str

    @property
    def version(self) -> str:
        return content_version(self.name, self.text)

    def render(self, **values: object) -> str:
        """Fill `$placeholders`; a missing value raises KeyError naming it."""
        return Template(self.text).substitute({k: str(v) for k, v in values.items()})


@cache
def load_prompt(name: str) -> Prompt:
    """Load `cbtcompare/prompts/<name>.txt`; raises FileNotFoundError listing the prompts that exist."""
    folder = resources.files(__package__)
    path = folder / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".txt") for p in folder.iterdir() if p.name.endswith(".txt"))
        raise FileNotFoundError(f"no prompt named {name!r}; known prompts: {', '.join(known)}")
    return Prompt(name=name, text=path.read_text(encoding="utf-8").strip())


DEFAULT_SESSION_PROMPT = "therapist_basic"


@dataclass(frozen=True)
class SystemPrompt:
    """The system prompt one pane actually used, and where it came from."""

    text: str | None
    version: str | None
    source: str  # "model" (the spec's own prompt), "session" (the parity card) or "none"


def resolve_system_prompt(model_prompt: str | None, session_prompt: str | None) -> SystemPrompt:
    """A spec's own prompt (a prompt file name) wins, since it defines that variant; else the session's text."""
    if model_prompt:
        prompt = load_prompt(model_prompt)
        return SystemPrompt(prompt.text, prompt.version, "model")
    if session_prompt and session_prompt.strip():
        text = session_prompt.strip()
        return SystemPrompt(text, Prompt("session", text).version, "session")
    return SystemPrompt(None, None, "none")
