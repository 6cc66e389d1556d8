"""Memory of the loaded instruct + adapter pair vs the instruct model alone (proportional set size).

Each case runs in a fresh subprocess that loads the model(s), generates one short reply with each, and
reads its PSS from /proc/self/smaps_rollup. Until the shipped adapter exists, the pair uses a small random
LoRA this script writes itself. Also printed, for information: the pair while both generate at once (two
contexts, each with its own KV cache). Last line: ratio=<pair PSS / alone PSS>. Target <= 1.15.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

SHIPPED_ADAPTER = _common.REPO / "adapters" / "smollm2-135m-cbt" / "adapter.gguf"

CHILD = r"""
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from cbtcompare.models.base import Message, ModelSpec, Sampling
from cbtcompare.models.llamacpp import LlamaCppModel

def pss_kib():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1])

adapter, mode = sys.argv[2], sys.argv[3]
messages = [Message("user", "I keep worrying that I will fail my exams.")]
sampling = Sampling(temperature=0.7, max_tokens=32, seed=1)
models = [LlamaCppModel(ModelSpec(name="instruct", backend="llamacpp", weights="embedded:smollm2"))]
if mode != "alone":
    tuned = ModelSpec(name="tuned", backend="llamacpp", weights="embedded:smollm2", adapter=adapter)
    models.append(LlamaCppModel(tuned))
if mode == "concurrent":
    threads = [threading.Thread(target=m.complete, args=(messages, sampling)) for m in models]
    [t.start() for t in threads]; [t.join() for t in threads]
else:
    for m in models:
        m.complete(messages, sampling)
print(json.dumps({"pss_kib": pss_kib()}))
"""


def measure(adapter: Path, mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(_common.REPO), str(adapter), mode],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["pss_kib"]


def main() -> None:
    from cbtcompare.models.defaults import default_gguf_path
    from cbtcompare.models.gguf_lora import random_lora_for

    with tempfile.TemporaryDirectory() as folder:
        if SHIPPED_ADAPTER.exists():
            adapter, label = SHIPPED_ADAPTER, "shipped adapter"
        else:
            adapter, label = random_lora_for(default_gguf_path(), Path(folder) / "bench_lora.gguf"), "random LoRA r=8"
        alone = measure(adapter, "alone")
        pair = measure(adapter, "pair")
        concurrent = measure(adapter, "concurrent")
    print(f"adapter: {label} ({adapter.stat().st_size / 1e6:.1f} MB)" if adapter.exists() else f"adapter: {label}")
    print(f"instruct alone:                 {alone / 1024:.1f} MiB PSS")
    print(f"instruct + tuned pair:          {pair / 1024:.1f} MiB PSS")
    print(f"pair generating at once (info): {concurrent / 1024:.1f} MiB PSS, ratio {concurrent / alone:.3f}")
    print(f"ratio={pair / alone:.3f}")


if __name__ == "__main__":
    main()
