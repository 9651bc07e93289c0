"""Build a container image from a directory and push it, with no Docker daemon.

    python build_and_push.py --context build/app --tag registry.example.com/team/app:1.4.2 \\
        [--base registry.example.com/base/jre:21] [--entrypoint "java -jar /app/app.jar"]

The directory becomes one layer under /app on top of the base image (or an empty image).
Inside a GitLab job the registry credentials come from CI_REGISTRY, CI_REGISTRY_USER and
CI_REGISTRY_PASSWORD; elsewhere from ``docker login`` / ``podci image login``. Files get
the time in $SOURCE_DATE_EPOCH (else 0), so the same inputs give the same digest.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import podci
from podci import image


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--context", required=True, type=Path, help="directory to put under /app")
    parser.add_argument("--tag", required=True, help="where to push, e.g. registry/team/app:1.0")
    parser.add_argument("--also-tag", action="append", default=[], help="more tags of the same repository")
    parser.add_argument("--base", default=None, help="base image (default: an empty image)")
    parser.add_argument("--entrypoint", default=None, help="command line, split like a shell")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    env = dict(item.split("=", 1) for item in args.env if "=" in item)
    try:
        report = image.append(
            args.base,
            [(args.context, "/app")],
            args.tag,
            extra_tags=args.also_tag,
            entrypoint=shlex.split(args.entrypoint) if args.entrypoint else None,
            env=env,
            workdir="/app",
            labels={"org.opencontainers.image.source": str(args.context.resolve())},
        )
    except podci.RegistryError as e:
        print(f"push failed: {e.message}", file=sys.stderr)
        if e.status == 401 or e.kind == "auth":
            print("hint: log in with `podci image login` or set CI_REGISTRY_USER/CI_REGISTRY_PASSWORD", file=sys.stderr)
        return 1
    print(f"{report.reference}@{report.digest}")
    print(f"uploaded {report.blobs_uploaded}, mounted {report.blobs_mounted}, already there {report.blobs_existing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
