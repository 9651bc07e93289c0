"""Daemonless container images: build on a base image by appending layers from local
files, copy images between registries, OCI layouts and docker archives, and inspect them.

Locations are written as in the ``podci image`` CLI: a registry reference
(``registry.example.com/team/app:1.0``, ``docker://`` optional), ``oci:DIR[:TAG]`` or
``docker-archive:FILE[:REF]``. Registries on loopback addresses are reached over plain
HTTP; list others in ``insecure_registries``.

Credentials are found as the CLI finds them: Docker's ``config.json`` (``$DOCKER_CONFIG``),
credential helpers, Podman's ``auth.json``, and the environment. ``username``/``password``
override them for the registries of one call; the password is kept out of logs, error
messages and process arguments.

Every call releases the GIL while it works. The ``*_async`` variants run the same call in
a worker thread for use with ``asyncio``; cancelling the awaiting task does not stop a
transfer already under way.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from podci._native import WriteReport, image_append, image_copy, image_inspect

__all__ = [
    "Layer",
    "WriteReport",
    "append",
    "append_async",
    "copy",
    "copy_async",
    "inspect",
    "inspect_async",
]

P = ParamSpec("P")
R = TypeVar("R")

#: A layer: a directory (its contents land under ``/``) or file (lands as ``/NAME``), or
#: ``(source, destination)`` to put it elsewhere in the image.
Layer = str | os.PathLike[str] | tuple[str | os.PathLike[str], str]


def _layers(layers: Sequence[Layer] | Layer) -> list[tuple[str, str | None]]:
    if isinstance(layers, (str, os.PathLike, tuple)):
        layers = [layers]
    out: list[tuple[str, str | None]] = []
    for layer in layers:
        if isinstance(layer, tuple):
            src, dest = layer
            if not dest.startswith("/"):
                raise ValueError(f"layer destination {dest!r} must be an absolute path in the image")
            out.append((os.fspath(src), dest))
        else:
            out.append((os.fspath(layer), None))
    return out


def _strings(value: str | Sequence[str] | None) -> list[str] | None:
    """An entrypoint or cmd: a list of words, or a string run by ``/bin/sh -c``."""
    if value is None:
        return None
    if isinstance(value, str):
        return ["/bin/sh", "-c", value]
    return list(value)


def _pairs(value: Mapping[str, str] | None, what: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    out = []
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{what} must map str to str (got {k!r}: {type(v).__name__})")
        out.append((k, v))
    return out


def _mtime(mtime: int | None) -> int:
    if mtime is not None:
        return mtime
    # Reproducible builds: the same default as the CLI ($SOURCE_DATE_EPOCH, else 0).
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(epoch) if epoch.isdigit() else 0


def append(
    base: str | None,
    layers: Sequence[Layer] | Layer,
    tag: str,
    *,
    extra_tags: Sequence[str] = (),
    entrypoint: str | Sequence[str] | None = None,
    cmd: str | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
    labels: Mapping[str, str] | None = None,
    expose: Sequence[str | int] = (),
    mtime: int | None = None,
    created: str | None = None,
    platform: str | None = None,
    insecure_registries: Sequence[str] = (),
    parallel: int = 4,
    chunk_size: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> WriteReport:
    """Builds an image from ``base`` (a location, or ``None``/``"scratch"`` for an empty
    one) plus one layer per entry of ``layers``, and writes it to ``tag`` (plus
    ``extra_tags`` of the same repository). No container engine is involved: layers are
    made deterministically (file times ``mtime``, default ``$SOURCE_DATE_EPOCH`` or 0) and
    base layers are mounted or skipped rather than downloaded when pushing to the same
    registry.

    ``entrypoint``/``cmd`` given as a string run through ``/bin/sh -c``; setting
    ``entrypoint`` clears the base's ``cmd`` unless ``cmd`` is given too (like a
    Dockerfile). ``env`` and ``labels`` add to the base's. Raises :class:`podci.RegistryError`.
    """
    return image_append(
        base,
        _layers(layers),
        tag,
        extra_tags=list(extra_tags),
        entrypoint=_strings(entrypoint),
        cmd=_strings(cmd),
        env=_pairs(env, "env"),
        workdir=workdir,
        user=user,
        labels=_pairs(labels, "labels"),
        expose=[str(p) for p in expose],
        mtime=_mtime(mtime),
        created=created,
        platform=platform,
        insecure_registries=list(insecure_registries),
        parallel=parallel,
        chunk_size=chunk_size,
        username=username,
        password=password,
    )


def copy(
    src: str,
    dst: str,
    *,
    extra_tags: Sequence[str] = (),
    platform: str | None = None,
    insecure_registries: Sequence[str] = (),
    parallel: int = 4,
    chunk_size: int | None = None,
    username: str | None = None,
    password: str | None = None,
) -> WriteReport:
    """Copies one image from ``src`` to ``dst`` (each a registry reference, ``oci:DIR[:TAG]``
    or ``docker-archive:FILE[:REF]``), streaming each blob once and skipping blobs the
    destination has. A multi-platform ``src`` is resolved to ``platform`` (default: this
    machine's). Raises :class:`podci.RegistryError`."""
    return image_copy(
        src,
        dst,
        extra_tags=list(extra_tags),
        platform=platform,
        insecure_registries=list(insecure_registries),
        parallel=parallel,
        chunk_size=chunk_size,
        username=username,
        password=password,
    )


def inspect(
    reference: str,
    *,
    platform: str | None = None,
    insecure_registries: Sequence[str] = (),
    username: str | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """The image's ``reference``, manifest ``digest``, ``mediaType``, ``platform``
    (``os/arch``), ``config`` (Env, Entrypoint, Cmd, Labels, ...) and ``layers``
    (descriptors), as ``podci image inspect`` prints them. Only the manifest and config are
    fetched. Raises :class:`podci.RegistryError`."""
    return image_inspect(
        reference,
        platform=platform,
        insecure_registries=list(insecure_registries),
        username=username,
        password=password,
    )


def _in_thread(fn: Callable[P, R], doc: str) -> Callable[P, Coroutine[Any, Any, R]]:
    """``fn`` as a coroutine function that runs it in a worker thread (``fn`` releases the
    GIL, so several of them awaited together transfer in parallel)."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(fn, *args, **kwargs)

    run.__name__ = f"{fn.__name__}_async"
    run.__qualname__ = run.__name__
    run.__doc__ = doc
    return run


append_async = _in_thread(append, ":func:`append` in a worker thread, for asyncio code.")
copy_async = _in_thread(
    copy,
    ":func:`copy` in a worker thread, for asyncio code: copies awaited together run in parallel.",
)
inspect_async = _in_thread(inspect, ":func:`inspect` in a worker thread, for asyncio code.")
