"""Show which jobs a commit would run and the payload a runner would receive for one.

    python what_runs.py [.gitlab-ci.yml] [--branch B | --tag T] [--var KEY=VALUE] [--payload JOB]
"""

from __future__ import annotations

import argparse
import json
import sys

import podci


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", nargs="?", default=".gitlab-ci.yml")
    ref = parser.add_mutually_exclusive_group()
    ref.add_argument("--branch")
    ref.add_argument("--tag")
    parser.add_argument("--var", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--changed", action="append", default=None, metavar="PATH")
    parser.add_argument("--payload", metavar="JOB", help="print this job's runner payload")
    args = parser.parse_args()

    pipeline = podci.load(args.file)
    try:
        jobs = pipeline.evaluate(
            branch=args.branch,
            tag=args.tag,
            variables=dict(v.split("=", 1) for v in args.var if "=" in v),
            changed_files=args.changed,
        )
    except podci.PipelineError as e:
        for d in e.diagnostics:
            print(d, file=sys.stderr)
        print(e.message, file=sys.stderr)
        return 1
    for stage in pipeline.stages:
        in_stage = [j for j in jobs if j.stage == stage]
        if in_stage:
            print(f"{stage}: " + ", ".join(f"{j.name} ({j.when})" for j in in_stage))
    if args.payload:
        chosen = next((j for j in jobs if j.name == args.payload), None)
        if chosen is None:
            print(f"{args.payload} does not run for this commit", file=sys.stderr)
            return 1
        print(json.dumps(pipeline.payload(chosen), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
