"""Deploy manifests with the image just built, and wait until it is rolled out: the last
stage of a release script, with no ``sed`` on the YAML and a useful report when the
new Pods crash.

    python deploy_with_wait.py k8s/ --image app=registry.example.com/app:1.4
        [--namespace N] [--timeout SECONDS] [--kubeconfig FILE] [--dry-run]

Prints each step as it happens; on failure the failing Pods' reasons, events and last
log lines, and exits 1.
"""

from __future__ import annotations

import argparse
import sys

import podci


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifests", nargs="+", help="files, directories or kustomizations")
    parser.add_argument("--image", action="append", default=[], metavar="CONTAINER=IMAGE")
    parser.add_argument("--namespace")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--kubeconfig")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()

    try:
        result = podci.deploy(
            args.manifests,
            images=args.image,
            namespace=args.namespace,
            wait=True,
            timeout=args.timeout,
            dry_run=args.dry_run,
            kubeconfig=args.kubeconfig,
            on_progress=lambda line: print(line, flush=True),
        )
    except podci.KubernetesError as e:
        print(f"deploy failed ({e.kind}): {e.message}", file=sys.stderr)
        for pod in e.pods:
            print(f"pod {pod['name']}: {pod['reason']}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"deploy failed: {e}", file=sys.stderr)
        return 2
    if result.dry_run:
        print(result.diff or result.rendered, end="")
        return 0
    for rollout in result.rollouts:
        print(f"{rollout.kind.lower()}/{rollout.name} in {rollout.namespace}: {rollout.message}")
    print(f"deployed {len(result.objects)} object(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
