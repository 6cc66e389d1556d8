"""Cost of a 12-turn conversation: our llama.cpp backend vs raw llama-cpp-python with its own prefix reuse.

Both sides run the same conversation (the same fixed replies are appended, so both see the same prompts)
over the same GGUF in this process; rounds alternate which side goes first. Printed: time to first token
per turn for each side (it must stay flat as the conversation grows), the last-turns TTFT ratio (turns
10-12; target <= 1.3) and the session-total ratio (target <= 1.2). Last line: ratio=<session total ours /
raw>. Run on an idle machine: other work on the cores swings timings 5-10x.

`--no-reuse` measures the old path (CBTCOMPARE_PREFIX_REUSE=0: every request resets the cache), for the
before figure; `--turns 2 --rounds 1` is a quick check that the script runs.
"""

from __future__ import annotations

import argparse
import os
import time

import _common
from llama_cpp import Llama

from cbtcompare.models.base import ChatModel, Message, ModelSpec, Sampling
from cbtcompare.models.defaults import default_gguf_path
from cbtcompare.models.llamacpp import LlamaCppModel

ROUNDS = 3
TURNS = 12
MAX_TOKENS = 48
SYSTEM = "You are a supportive CBT therapist. Keep each reply to three sentences. " * 4
PATIENT = "This week I kept thinking that everyone at work is judging me, and I stayed home twice. " * 2
REPLY = "That sounds hard. What went through your mind just before you decided to stay home? " * 2


def conversation(turn: int) -> list[Message]:
    messages = [Message("system", SYSTEM)]
    for k in range(turn + 1):
        messages.append(Message("user", f"Turn {k}. {PATIENT}"))
        if k < turn:
            messages.append(Message("assistant", REPLY))
    return messages


def timed_turns(model: ChatModel, turns: int, max_tokens: int = MAX_TOKENS) -> list[tuple[float, float]]:
    """(time to first token, turn time) for each turn of the conversation, through the model's own stream."""
    timings = []
    for turn in range(turns):
        started = time.perf_counter()
        first = None
        for _ in model.stream(conversation(turn), Sampling(temperature=0.7, max_tokens=max_tokens, seed=turn)):
            first = first or time.perf_counter() - started
        timings.append((first or 0.0, time.perf_counter() - started))
    return timings


def ours_session(model: LlamaCppModel, turns: int) -> list[tuple[float, float]]:
    model.shared.forget_caches()
    return timed_turns(model, turns)


def raw_session(llama: Llama, model: LlamaCppModel, turns: int) -> list[tuple[float, float]]:
    llama.reset()
    timings = []
    for turn in range(turns):
        tokens = model._render(conversation(turn))[0]
        started = time.perf_counter()
        first = None
        for _ in llama.create_completion(
            prompt=tokens, max_tokens=MAX_TOKENS, temperature=0.7, seed=turn, stream=True, stop=["<|im_end|>"]
        ):
            first = first or time.perf_counter() - started
        timings.append((first or 0.0, time.perf_counter() - started))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--no-reuse", action="store_true", help="the old path: reset the KV cache per request")
    args = parser.parse_args()
    os.environ["CBTCOMPARE_PREFIX_REUSE"] = "0" if args.no_reuse else "1"
    turns, rounds = args.turns, args.rounds

    model = LlamaCppModel(ModelSpec(name="scaling", backend="llamacpp", weights="embedded:smollm2"))
    llama = Llama(model_path=str(default_gguf_path()), n_ctx=model.spec.n_ctx, verbose=False, seed=0)
    ours_runs, raw_runs = [], []
    for round_index in range(rounds):
        sides = [("ours", lambda: ours_session(model, turns)), ("raw", lambda: raw_session(llama, model, turns))]
        for name, run in sides if round_index % 2 == 0 else reversed(sides):
            (ours_runs if name == "ours" else raw_runs).append(run())

    def per_turn(runs: list[list[tuple[float, float]]], index: int) -> list[float]:
        return [_common.median([run[turn][index] for run in runs]) for turn in range(turns)]

    ours_ttft, raw_ttft = per_turn(ours_runs, 0), per_turn(raw_runs, 0)
    ours_total = _common.median([sum(t for _, t in run) for run in ours_runs])
    raw_total = _common.median([sum(t for _, t in run) for run in raw_runs])
    print(f"prefix reuse: {'off (before)' if args.no_reuse else 'on'}; {turns} turns, medians of {rounds} rounds")
    for turn in range(turns):
        print(f"turn {turn + 1:2d}: ttft ours {ours_ttft[turn] * 1000:7.1f} ms   raw {raw_ttft[turn] * 1000:7.1f} ms")
    last = min(3, turns)
    ratio_last = sum(ours_ttft[-last:]) / sum(raw_ttft[-last:])
    print(f"last-turns TTFT ratio (last {last} turns): {ratio_last:.3f}  (target <= 1.3)")
    print(f"session total: ours {ours_total:.2f} s, raw {raw_total:.2f} s  (target ratio <= 1.2)")
    model.close()
    llama.close()
    print(f"ratio={ours_total / raw_total:.3f}")


if __name__ == "__main__":
    main()
