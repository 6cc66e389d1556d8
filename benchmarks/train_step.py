"""Training step time: our SFTTrainer step (training/train_lora.py) vs a plain PEFT loop, same batch and model.

One process, one LoRA-wrapped base (the CPU preset's model and LoRA settings), one pre-tokenised example
with its therapist mask. The plain step is forward, backward, AdamW step, zero_grad. Ours is a step of
the trainer train_lora builds (data collator, TRL's loss, clipping, scheduler, callbacks, logging).
Rounds alternate so machine noise hits both alike; the first step of each block is a warm-up.
Last line: ratio=<median ours step seconds / median plain step seconds>. Target <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="smollm2-135m-cpu", help="training preset whose model and LoRA are used")
    parser.add_argument("--seq-len", type=int, default=384, help="tokens in the benchmark batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per block (after one warm-up step)")
    parser.add_argument(
        "--clock", choices=["cpu", "wall"], default="cpu",
        help="cpu: this process's CPU seconds (steady on a shared machine); wall: elapsed seconds",
    )
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    import torch
    from peft import get_peft_model
    from transformers import TrainerCallback

    from training.config import TrainConfig
    from training.train_lora import (
        build_examples,
        build_trainer,
        choose_placement,
        load_base,
        lora_config,
        read_sessions,
        resolve_base_model,
    )

    config = TrainConfig.from_yaml(args.config, {"max_seq_len": args.seq_len, "logging_steps": 1,
                                                 "save_steps": 10_000})
    placement = choose_placement(config)
    model, tokenizer = load_base(resolve_base_model(config.base_model), config, placement)
    sessions = read_sessions(config.dataset_path())
    examples, _ = build_examples(sessions, tokenizer, config.max_seq_len)
    example = max(examples, key=lambda e: len(e["input_ids"]))
    model = get_peft_model(model, lora_config(config))
    model.train()
    ids = torch.tensor([example["input_ids"]])
    labels = torch.tensor([[t if m else -100 for t, m in zip(example["input_ids"], example["assistant_masks"],
                                                                 strict=True)]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)

    def plain_block(steps: int) -> list[float]:
        times = []
        for index in range(steps + 1):
            started = clock()
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index:
                times.append(clock() - started)
        return times

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.started = clock()

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            self.times.append(clock() - self.started)

    def ours_block(steps: int) -> list[float]:
        timer = StepTimer()
        block = config.replace(max_steps=steps + 1)
        with tempfile.TemporaryDirectory() as folder:
            trainer = build_trainer(block, placement, model, tokenizer, [example] * (steps + 1), Path(folder),
                                    [timer])
            trainer.args.save_strategy = "no"
            trainer.train()
        return timer.times[1:]

    ours, plain = [], []
    for _ in range(args.rounds):
        plain += plain_block(args.steps)
        ours += ours_block(args.steps)
    ours_median, plain_median = _common.median(ours), _common.median(plain)
    print(json.dumps({
        "tokens": len(example["input_ids"]), "therapist_tokens": sum(example["assistant_masks"]),
        "device": placement.device, "precision": placement.precision, "threads": torch.get_num_threads(),
        "ours_s": [round(t, 3) for t in ours], "plain_s": [round(t, 3) for t in plain],
    }))
    print(f"ours median {ours_median:.3f} s/step, plain PEFT median {plain_median:.3f} s/step ({args.clock} clock)")
    print(f"ratio={ours_median / plain_median:.3f}")


if __name__ == "__main__":
    main()
