"""What the crisis classifier's encoder costs per screened message: MiniLM vs all-mpnet-base-v2, CPU, one thread.

Each encoder runs in a fresh child process (so RSS is that encoder's alone, torch included): load time,
then the median ms to embed one short message and one long one (the classifier's windows, as the screen
reads them), and the process's peak RSS. Needs an idle machine; the figures are per message, as the app
screens every turn. Last line: ratio=<mpnet ms / minilm ms, short message>.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import _common

SHORT = "I don't think I can keep going like this, everyone would be better off without me."
LONG = " ".join(
    [
        "Work was awful again today and my manager kept me late, so I missed the bus and walked home in the rain.",
        "My sister called and we argued about mum's birthday, which I forgot, like I forget everything lately.",
        "I keep lying awake going over it all, the rent, the car, the way nobody at work even looks at me.",
        "Honestly I've started counting the pills in the bathroom cabinet and thinking about how many it would take.",
        "Anyway I made pasta and watched something, and I suppose tomorrow is another day of the same.",
    ]
    * 3
)

CHILD = r"""
import json, os, resource, statistics, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
from cbtcompare import safety_classifier as sc
name, short, long_text, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
head = sc.load_head()
pieces = sc.windows(long_text, head.window_words, head.min_window_words, head.max_windows)
encoder = sc._LazyEncoder()
started = time.perf_counter()
encoder.encode([short], (name,))
load_s = time.perf_counter() - started
def timed(texts):
    runs = []
    for _ in range(rounds):
        t = time.perf_counter(); encoder.encode(texts, (name,)); runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs)
print(json.dumps({"encoder": name, "load_s": round(load_s, 2), "short_ms": round(timed([short]), 1),
                  "long_ms": round(timed(pieces), 1), "long_windows": len(pieces),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def measure(name: str, rounds: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, SHORT, LONG, str(rounds)],
        cwd=_common.REPO, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    figures = {name: measure(name, args.rounds) for name in ("minilm", "mpnet")}
    for row in figures.values():
        print(json.dumps(row))
    print(f"ratio={figures['mpnet']['short_ms'] / figures['minilm']['short_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
