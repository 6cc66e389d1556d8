"""Decode speed of our llama.cpp backend vs raw llama-cpp-python, same prompt, model and settings.

Both run in this process over the same GGUF; runs alternate so machine noise hits both alike.
Last line: ratio=<ours tokens/s / raw tokens/s>. Target >= 0.95.
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (puts the repo on sys.path)
from llama_cpp import Llama

from cbtcompare.models.base import Message, ModelSpec, Sampling
from cbtcompare.models.defaults import default_gguf_path
from cbtcompare.models.llamacpp import LlamaCppModel

ROUNDS = 8
MAX_TOKENS = 128
MESSAGES = [Message("user", "Tell me a long story about a lighthouse keeper who learns to paint.")]


def ours_tokens_per_second(model: LlamaCppModel, seed: int) -> float:
    sampling = Sampling(temperature=0.8, top_p=0.95, max_tokens=MAX_TOKENS, seed=seed)
    stream = model.stream(MESSAGES, sampling)
    started = None
    tokens = 0
    for _ in stream:
        if started is None:
            started = time.perf_counter()
        else:
            tokens += 1
    return tokens / (time.perf_counter() - started)


def raw_tokens_per_second(llama: Llama, prompt_tokens: list[int], seed: int) -> float:
    llama.reset()
    started = None
    tokens = 0
    for _ in llama.create_completion(
        prompt=prompt_tokens,
        max_tokens=MAX_TOKENS,
        temperature=0.8,
        top_p=0.95,
        seed=seed,
        stream=True,
        stop=["<|im_end|>"],
    ):
        if started is None:
            started = time.perf_counter()
        else:
            tokens += 1
    return tokens / (time.perf_counter() - started)


def main() -> None:
    path = default_gguf_path()
    ours = LlamaCppModel(ModelSpec(name="bench", backend="llamacpp", weights=str(path)))
    raw = Llama(model_path=str(path), n_ctx=2048, verbose=False)
    prompt_tokens = ours._render(MESSAGES)[0]
    ours_rates, raw_rates = [], []
    for round_index in range(ROUNDS):
        # alternate which goes first, so drift in machine load hits both alike
        if round_index % 2:
            ours_rates.append(ours_tokens_per_second(ours, seed=round_index))
            raw_rates.append(raw_tokens_per_second(raw, prompt_tokens, seed=round_index))
        else:
            raw_rates.append(raw_tokens_per_second(raw, prompt_tokens, seed=round_index))
            ours_rates.append(ours_tokens_per_second(ours, seed=round_index))
    ours_median, raw_median = _common.median(ours_rates), _common.median(raw_rates)
    print(f"raw llama-cpp-python: {raw_median:.1f} tokens/s (median of {ROUNDS})")
    print(f"cbtcompare llamacpp:  {ours_median:.1f} tokens/s (median of {ROUNDS})")
    print(f"ratio={ours_median / raw_median:.3f}")


if __name__ == "__main__":
    main()
