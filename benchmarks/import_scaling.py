"""Import time and peak memory against input size: is parsing linear, and is a too-big file refused early?

For each format (JSON list of transcripts, JSONL, plain text) a synthetic file of SMALL_MB and LARGE_MB
is parsed in fresh subprocesses (so ru_maxrss is that import's peak; the fastest of --repeats runs
counts), with the limits raised so the parser itself is timed. Then the LARGE_MB files are imported with
the default limits, which must refuse them before reading. `--code PATH` times another checkout's
cbtcompare (e.g. an older commit unpacked with `git archive`), which has no limits to raise. Last line:
ratio=<worst time-per-MB of the large file over the small one>; 1.0 is linear. The parser this replaced
took 9.8 s for 5 MB of JSON and did not finish 50 MB in 200 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

SMALL_MB = 5
LARGE_MB = 50
TURN_TEXT = "I keep thinking \"I'm a failure\" \\ and then I stop trying. " * 5  # ~300 characters

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import cbtcompare.importers as importers
path, raise_limits = Path(sys.argv[2]), sys.argv[3] == "raise"
kwargs = {}
if raise_limits and hasattr(importers, "ImportLimits"):
    kwargs["limits"] = importers.ImportLimits(
        max_bytes=1 << 30, max_transcripts=10**7, max_turns=10**7, max_turn_chars=10**8
    )
start = time.perf_counter()
try:
    count, outcome = len(importers.import_file(path, **kwargs)), "parsed"
except Exception as exc:
    count, outcome = 0, f"{type(exc).__name__}: {str(exc)[:90]}"
seconds = time.perf_counter() - start
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak_mib, "transcripts": count, "outcome": outcome}))
"""


def transcript_record(n: int) -> dict:
    turns = [{"role": "patient" if i % 2 == 0 else "therapist", "text": f"{i}: {TURN_TEXT}"} for i in range(40)]
    return {"id": f"bench-{n}", "created_at": "2026-01-01T00:00:00.000+00:00", "turns": turns}


def write_input(folder: Path, fmt: str, megabytes: int) -> Path:
    target = megabytes * 1024 * 1024
    path = folder / f"in-{megabytes}mb.{ {'json': 'json', 'jsonl': 'jsonl', 'text': 'txt'}[fmt] }"
    with path.open("w", encoding="utf-8") as out:
        size, n = 0, 0
        if fmt == "json":
            out.write("[\n")
        while size < target:
            if fmt == "text":
                chunk = f"{'Patient' if n % 2 == 0 else 'Therapist'}: {n} {TURN_TEXT}\n{TURN_TEXT}\n"
            else:
                record = json.dumps(transcript_record(n), indent=1 if fmt == "json" else None)
                chunk = ("," if n and fmt == "json" else "") + record + "\n"
            out.write(chunk)
            size += len(chunk.encode())
            n += 1
        if fmt == "json":
            out.write("]\n")
    return path


def run_child(code: Path, path: Path, limits: str, timeout: float) -> dict:
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(code), str(path), limits],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": timeout, "peak_mib": float("nan"), "transcripts": 0, "outcome": f"timed out at {timeout}s"}
    if done.returncode != 0:
        return {"seconds": float("nan"), "peak_mib": float("nan"), "transcripts": 0, "outcome": done.stderr[-200:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--code", type=Path, default=_common.REPO, help="folder holding the cbtcompare to time")
    parser.add_argument("--small-mb", type=int, default=SMALL_MB)
    parser.add_argument("--large-mb", type=int, default=LARGE_MB)
    parser.add_argument("--timeout", type=float, default=600, help="seconds before one parse is abandoned")
    parser.add_argument("--formats", default="json,jsonl,text")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size; the fastest one counts")
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            per_mb = {}
            for megabytes in (args.small_mb, args.large_mb):
                path = write_input(Path(tmp), fmt, megabytes)
                runs = [run_child(args.code, path, "raise", args.timeout) for _ in range(args.repeats)]
                result = min(runs, key=lambda r: r["seconds"])  # the least disturbed run on a shared machine
                per_mb[megabytes] = result["seconds"] / megabytes
                print(
                    f"{fmt:5} {megabytes:3} MB  parse {result['seconds']:7.2f} s  peak {result['peak_mib']:7.1f} MiB  "
                    f"{result['transcripts']} transcript(s)  {result['outcome']}"
                )
            refused = run_child(args.code, path, "default", args.timeout)
            print(
                f"{fmt:5} {args.large_mb:3} MB  default limits: {refused['seconds']:.3f} s  "
                f"peak {refused['peak_mib']:.1f} MiB  {refused['outcome']}"
            )
            ratios.append(per_mb[args.large_mb] / per_mb[args.small_mb])
            path.unlink()
    print(f"ratio={max(ratios):.2f}")


if __name__ == "__main__":
    main()
