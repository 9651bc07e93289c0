"""Lint every GitLab CI pipeline in a monorepo, the way GitLab would, before pushing.

    python lint_monorepo.py [ROOT] [--branch BRANCH]

Finds each ``.gitlab-ci.yml`` under ROOT (skipping .git, node_modules, target), validates it
with its own directory as the root for ``include: local:``, prints ``FILE:LINE:COLUMN:
message`` for each problem and, for valid ones, the jobs a push to BRANCH would create.
Exits 1 when any pipeline is invalid.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import podci

SKIP = {".git", "node_modules", "target", ".venv"}


def pipelines(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP)
        if ".gitlab-ci.yml" in filenames:
            yield Path(dirpath) / ".gitlab-ci.yml"


def lint(path: Path, branch: str) -> bool:
    pipeline = podci.load(path)
    for warning in pipeline.warnings:
        print(f"{warning} (warning)")
    if not pipeline.valid:
        for error in pipeline.errors:
            print(error)
        return False
    try:
        jobs = pipeline.evaluate(branch=branch)
    except podci.PipelineError as e:
        print(f"{path}: {e.message}")
        return False
    names = ", ".join(job.name for job in jobs) or "no jobs"
    print(f"{path}: ok ({len(pipeline.jobs)} jobs; a push to {branch} runs {names})")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("root", nargs="?", default=".", type=Path)
    parser.add_argument("--branch", default="main")
    args = parser.parse_args()
    found = list(pipelines(args.root))
    if not found:
        print(f"no .gitlab-ci.yml under {args.root}", file=sys.stderr)
        return 2
    results = [lint(path, args.branch) for path in found]
    bad = results.count(False)
    print(f"{len(found) - bad} of {len(found)} pipelines valid")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
