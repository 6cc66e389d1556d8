"""`train`: start, watch, abort, resume and list LoRA training jobs (each a subprocess; see training/jobs.py).

    python -m cbtcompare train start --config smollm2-135m-cpu [--set max_steps=10] [--wait]
    python -m cbtcompare train status RUN [--json]
    python -m cbtcompare train abort RUN [--wait]
    python -m cbtcompare train resume RUN [--wait]
    python -m cbtcompare train list [--json]

This command only launches and reads jobs; it never trains in its own process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from training.config import TrainConfig, parse_override
from training.jobs import (
    FINAL_STATES,
    JobError,
    JobStatus,
    Launcher,
    abort_job,
    clean_stale_outputs,
    find_run,
    job_status,
    list_jobs,
    resume_job,
    start_job,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="LoRA training jobs: start, status, abort, resume, list")
    actions = parser.add_subparsers(dest="train_action", required=True)

    start = actions.add_parser("start", help="start a training job in the background")
    start.add_argument("--config", default="smollm2-135m-cpu", help="a YAML config or a preset in training/configs/")
    start.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    start.add_argument("--accelerate", type=int, metavar="N", help="run under `accelerate launch` on N processes")
    _wait_option(start)

    for name, text in (("status", "show one job"), ("abort", "stop a job; it saves a checkpoint and the adapter"),
                       ("resume", "continue a stopped job from its last checkpoint")):
        action = actions.add_parser(name, help=text)
        action.add_argument("run", help="run id (or a unique prefix of it) or run folder")
        action.add_argument("--json", action="store_true", help="print JSON")
        if name != "status":
            _wait_option(action)

    listing = actions.add_parser("list", help="list runs, newest first")
    listing.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def _wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="follow the job until it ends, printing progress")


def run(args: argparse.Namespace) -> int:
    try:
        if args.train_action == "start":
            overrides = dict(parse_override(item) for item in args.set)
            config = TrainConfig.from_yaml(args.config, overrides)
            launcher = Launcher("accelerate", args.accelerate) if args.accelerate else Launcher()
            status = start_job(config, launcher)
            print(f"started {status.run_id} (pid {status.pid}); log: {status.run_dir}")
            return _follow(status) if args.wait else 0
        if args.train_action == "list":
            for action in clean_stale_outputs():
                print(f"note: {action}", file=sys.stderr)
            statuses = list_jobs()
            if args.json:
                print(json.dumps([s.as_dict() for s in statuses], indent=2, default=str))
            elif not statuses:
                print("no training runs yet; start one with `python -m cbtcompare train start`")
            for status in statuses:
                print(status.summary().splitlines()[0])
            return 0
        run_dir = find_run(args.run)
        if args.train_action == "status":
            status = job_status(run_dir)
        elif args.train_action == "abort":
            status = abort_job(run_dir)
            print(f"sent SIGTERM to {status.run_id}; it saves a checkpoint after the current step")
        else:
            status = resume_job(run_dir)
            print(f"resumed {status.run_id} (pid {status.pid})")
        if getattr(args, "wait", False):
            return _follow(status)
        if getattr(args, "json", False):
            print(json.dumps(status.as_dict(), indent=2, default=str))
        else:
            print(status.summary())
        return _exit_code(status)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _follow(status: JobStatus, poll_s: float = 2.0) -> int:
    last = ""
    while True:
        status = job_status(status.run_dir)
        line = status.summary().splitlines()[0]
        if line != last:
            print(line, flush=True)
            last = line
        if status.state in FINAL_STATES:
            if status.error:
                print(status.error, file=sys.stderr)
            return _exit_code(status)
        time.sleep(poll_s)


def _exit_code(status: JobStatus) -> int:
    return 1 if status.state in ("failed", "dead") else 0
