"""Deployments: ``podci.deploy`` and ``podci.deploy_async``, the ``podci deploy`` of Python."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence

from podci._native import DeployResult
from podci._native import deploy as _deploy

__all__ = ["deploy", "deploy_async"]

Manifests = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def _paths(manifests: Manifests) -> list[str]:
    if isinstance(manifests, (str, os.PathLike)):
        return [os.fspath(manifests)]
    return [os.fspath(m) for m in manifests]


def _images(images: Mapping[str, str] | Sequence[str] | None) -> list[tuple[str, str]]:
    if images is None:
        return []
    if isinstance(images, Mapping):
        pairs = list(images.items())
    else:
        pairs = []
        for arg in images:
            name, sep, image = arg.partition("=")
            if not sep or not name or not image:
                raise ValueError(f"image {arg!r}: expected NAME=IMAGE, for example app=registry.example.com/app:1.2")
            pairs.append((name, image))
    for name, image in pairs:
        if not isinstance(name, str) or not isinstance(image, str):
            raise TypeError(f"images must map container names to image references (got {name!r}: {image!r})")
    return pairs


def deploy(
    manifests: Manifests,
    *,
    images: Mapping[str, str] | Sequence[str] | None = None,
    namespace: str | None = None,
    wait: bool = True,
    timeout: float = 300.0,
    dry_run: bool = False,
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    on_progress: Callable[[str], object] | None = None,
) -> DeployResult:
    """Applies Kubernetes manifests as ``podci deploy`` does and, with ``wait``, waits up to
    ``timeout`` seconds for every Deployment, StatefulSet and DaemonSet to roll out.

    ``manifests`` is a file (YAML, multi-document, or JSON), a directory of them, a
    kustomization directory, or a list of these. ``images`` sets container images by
    container name (``{"app": "registry.example.com/app:1.4"}`` or ``["app=..."]``) in
    every workload, instead of ``sed`` on the YAML; a name matching no container is an
    error before anything is sent. Objects are sent with server-side apply (field manager
    ``podci``) to ``namespace`` (default: the object's own, else the kubeconfig's).

    ``dry_run`` changes nothing: with a cluster, the server's dry run fills ``diff`` and
    ``rendered``; without one (no ``kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config`` or
    in-cluster account), ``rendered`` holds the manifests with images set.

    ``on_progress(line)`` gets each step as it happens (objects applied, rollout status
    lines). The call releases the GIL. Raises :class:`podci.KubernetesError`; a failed
    rollout's error lists the failing Pods with their events and last log lines.
    """
    return _deploy(
        _paths(manifests),
        images=_images(images),
        namespace=namespace,
        wait=wait,
        timeout=timeout,
        dry_run=dry_run,
        kubeconfig=None if kubeconfig is None else os.fspath(kubeconfig),
        context=context,
        on_progress=on_progress,
    )


async def deploy_async(
    manifests: Manifests,
    *,
    images: Mapping[str, str] | Sequence[str] | None = None,
    namespace: str | None = None,
    wait: bool = True,
    timeout: float = 300.0,
    dry_run: bool = False,
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    on_progress: Callable[[str], object] | None = None,
) -> DeployResult:
    """:func:`deploy` in a worker thread, for asyncio code (``on_progress`` is called from
    that thread). Deploys awaited together run in parallel. Cancelling the awaiting task
    does not stop a deploy already under way: objects sent stay applied."""
    return await asyncio.to_thread(
        deploy,
        manifests,
        images=images,
        namespace=namespace,
        wait=wait,
        timeout=timeout,
        dry_run=dry_run,
        kubeconfig=kubeconfig,
        context=context,
        on_progress=on_progress,
    )
