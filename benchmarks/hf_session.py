"""Cost of a 12-turn conversation on the hf backend (transformers on the default GGUF), KV prefix reuse on vs off.

Both sides run the same conversation (fixed replies are appended, so both see the same prompts) on one loaded
base in this process; rounds alternate which side goes first. Printed first: the largest logit difference
between evaluating a prompt from scratch and over a cached prefix (aligned, as the backend does it; and
reused at an arbitrary position, as plain `past_key_values` reuse would), then time to first token per turn
for each side (with reuse it must stay flat). Last line: ratio=<last-turns TTFT with reuse / without>.
Timings swing 5-10x with other work on the cores: run it on an idle machine. `--turns 2 --rounds 1` is a
quick check that the script runs.
"""

from __future__ import annotations

import argparse
import os

import _common
import torch
from session_scaling import conversation, timed_turns  # the same 12-turn conversation as the llama.cpp one

from cbtcompare.models.base import Message, ModelSpec
from cbtcompare.models.hf import HFModel, LoadedBase, loaded_bases
from cbtcompare.models.hf_cache import PREFIX_CHUNK_TOKENS, whole_chunk_length

ROUNDS = 3
TURNS = 12
MAX_TOKENS = 24


def shared_base(model: HFModel) -> LoadedBase:
    return next(b for b in loaded_bases() if b.model is model.base_model)


def tokens(model: HFModel, messages: list[Message]) -> list[int]:
    return model.tokenizer(model.render(messages), add_special_tokens=False)["input_ids"]


def session(model: HFModel, turns: int, *, reuse: bool) -> list[tuple[float, float]]:
    os.environ["CBTCOMPARE_PREFIX_REUSE"] = "1" if reuse else "0"
    shared_base(model).prefixes.clear()
    return timed_turns(model, turns, MAX_TOKENS)


def last_logits(base: LoadedBase, tokens: list[int], cache: object, *, chunked: bool) -> torch.Tensor:
    kwargs = {"prefill_chunk_size": PREFIX_CHUNK_TOKENS} if chunked else {}
    ids = torch.tensor([tokens])
    output = base.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        cache=cache,
        max_new_tokens=1,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=base.tokenizer.eos_token_id,
        **kwargs,
    )
    return output.logits[0][0]


def logit_differences(model: HFModel) -> dict[str, float]:
    """Max |logit| differences for turn 3's prompt, with turn 2's prompt as the cached prefix."""
    base = shared_base(model)
    earlier, prompt = tokens(model, conversation(1)), tokens(model, conversation(2))
    shared = next(
        (i for i, (a, b) in enumerate(zip(earlier, prompt, strict=False)) if a != b), min(len(earlier), len(prompt))
    )
    prefix = prompt[:shared]

    def cached(length: int, *, chunked: bool) -> object:
        cache = base.new_cache()
        last_logits(base, prefix[:length], cache, chunked=chunked)
        cache.crop(length - cache.get_seq_length())  # drop the one generated position, if any
        return cache

    one_batch = last_logits(base, prompt, base.new_cache(), chunked=False)
    chunked = last_logits(base, prompt, base.new_cache(), chunked=True)
    aligned_reuse = last_logits(base, prompt, cached(whole_chunk_length(len(prefix)), chunked=True), chunked=True)
    plain_reuse = last_logits(base, prompt, cached(len(prefix), chunked=False), chunked=False)

    def largest(difference: torch.Tensor) -> float:
        return difference.abs().max().item()

    return {
        "aligned reuse vs chunked from scratch (the backend)": largest(aligned_reuse - chunked),
        "reuse at the prefix's end vs one batch (plain past_key_values)": largest(plain_reuse - one_batch),
        "chunked vs one batch, both from scratch": largest(chunked - one_batch),
        "max |logit|": largest(one_batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    turns, rounds = args.turns, args.rounds

    model = HFModel(ModelSpec(name="hf-session", backend="hf", weights="embedded:smollm2"))
    for label, value in logit_differences(model).items():
        print(f"logits: {label}: {value:.3g}")
    runs: dict[bool, list[list[tuple[float, float]]]] = {True: [], False: []}
    for round_index in range(rounds):
        order = (True, False) if round_index % 2 == 0 else (False, True)
        for reuse in order:
            runs[reuse].append(session(model, turns, reuse=reuse))

    def per_turn(reuse: bool) -> list[float]:
        return [_common.median([run[turn][0] for run in runs[reuse]]) for turn in range(turns)]

    def total(reuse: bool) -> float:
        return _common.median([sum(t for _, t in run) for run in runs[reuse]])

    on, off = per_turn(True), per_turn(False)
    print(f"{turns} turns, max_tokens {MAX_TOKENS}, {args.threads} torch threads, medians of {rounds} rounds")
    for turn in range(turns):
        print(f"turn {turn + 1:2d}: ttft reuse {on[turn] * 1000:7.1f} ms   no reuse {off[turn] * 1000:7.1f} ms")
    last = min(3, turns)
    print(f"session total: reuse {total(True):.2f} s, no reuse {total(False):.2f} s")
    model.close()
    print(f"ratio={sum(on[-last:]) / sum(off[-last:]):.3f}")


if __name__ == "__main__":
    main()
