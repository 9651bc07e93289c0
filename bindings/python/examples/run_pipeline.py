"""Run a project's pipeline on this machine, as ``podci exec`` does, from a script: live
output prefixed with the job name, then one line per job and the exit status a CI
wrapper can use.

    python run_pipeline.py [PROJECT_DIR] [--job NAME ...] [--var KEY=VALUE ...] [-j N]
"""

from __future__ import annotations

import argparse
import sys

import podci


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("project", nargs="?", default=".")
    parser.add_argument("--job", action="append", default=[], help="run only this job (repeatable)")
    parser.add_argument("--var", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("-j", "--concurrency", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="no live output")
    args = parser.parse_args()

    def show(job: str, line: str) -> None:
        print(f"[{job}] {line}", flush=True)

    try:
        result = podci.run(
            args.project,
            jobs=args.job or None,
            variables=dict(v.split("=", 1) for v in args.var if "=" in v),
            concurrency=args.concurrency,
            on_log=None if args.quiet else show,
        )
    except podci.PipelineError as e:
        for d in e.diagnostics:
            print(d, file=sys.stderr)
        print(e.message, file=sys.stderr)
        return 2
    if not result.created:
        print("workflow:rules create no pipeline for this ref")
        return 0
    for job in result.jobs:
        took = f"{job.duration:.1f}s" if job.duration is not None else "-"
        status = f"{job.status} (allowed)" if job.allowed_failure else job.status
        print(f"{job.name:20} {job.stage:12} {status:18} {took:>7}")
    print(f"pipeline #{result.pipeline_id}: {result.status}; logs in {result.logs_dir}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
