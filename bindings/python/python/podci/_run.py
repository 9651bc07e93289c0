"""Local pipelines: ``podci.run`` and ``podci.run_async``, the ``podci exec`` of Python."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from podci._native import Cancel, PipelineResult, run_pipeline

__all__ = ["Cancel", "LogCallback", "run", "run_async"]

#: ``on_log(job, line)``: one line of a job's output, as it is printed.
LogCallback = Callable[[str, str], object]


def _project(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """The project directory and the pipeline file relative to it."""
    p = Path(path)
    if p.is_dir():
        if not (p / ".gitlab-ci.yml").is_file():
            raise FileNotFoundError(f"no .gitlab-ci.yml in {p}")
        return p, None
    if p.is_file():
        return p.parent, p.name
    raise FileNotFoundError(f"{p} is neither a project directory nor a pipeline file")


def _variables(variables: Mapping[str, str] | None) -> list[tuple[str, str]]:
    if variables is None:
        return []
    out = []
    for k, v in variables.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"variables must map str to str (got {k!r}: {type(v).__name__})")
        out.append((k, v))
    return out


def run(
    path: str | os.PathLike[str] = ".",
    jobs: Sequence[str] | None = None,
    variables: Mapping[str, str] | None = None,
    executor: Literal["shell", "docker"] = "shell",
    concurrency: int | None = None,
    on_log: LogCallback | None = None,
    *,
    branch: str | None = None,
    tag: str | None = None,
    source: str = "push",
    needs: bool = False,
    manual: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    keep: bool = False,
    with_dirty: bool = False,
    cancel: Cancel | None = None,
) -> PipelineResult:
    """Runs the pipeline of ``path`` (a project directory holding ``.gitlab-ci.yml``, or
    the pipeline file itself) on this machine, exactly as ``podci exec`` does: jobs in
    stage and ``needs:`` order, at most ``concurrency`` at once (default: the number of
    CPUs), with caches, artifacts, ``retry:``, ``allow_failure`` and ``after_script``.

    ``jobs`` limits the run to those jobs (instance or job names; named manual jobs run;
    ``needs=True`` adds what they need). ``variables`` are pipeline variables (they win
    over ``.podci/variables.yml``). ``executor`` is ``"shell"`` (local bash/sh processes)
    or ``"docker"`` (each job in its image through the Docker engine).

    ``on_log(job, line)`` is called for each line of job output as it is produced, with
    the GIL held for that call only; the run itself releases the GIL. An exception raised
    by ``on_log`` cancels the pipeline and is raised once the running jobs have stopped.
    Ctrl-C cancels too (running jobs get their ``after_script``; a second Ctrl-C kills
    them) and raises ``KeyboardInterrupt``; so does ``cancel.cancel()`` from another
    thread, which returns a result with ``canceled=True``.

    A pipeline whose jobs fail returns normally: check ``result.ok`` / ``result.status``.
    Raises :class:`podci.PipelineError` when the configuration is invalid, GitLab would not
    create the pipeline, or a named job does not exist, and :class:`podci.Error` when the
    run cannot be prepared.
    """
    project, file = _project(path)
    return run_pipeline(
        str(project),
        file=file,
        jobs=list(jobs or ()),
        variables=_variables(variables),
        executor=executor,
        concurrency=concurrency,
        on_log=on_log,
        cancel=cancel,
        branch=branch,
        tag=tag,
        source=source,
        needs=needs,
        manual=manual,
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        work_dir=None if work_dir is None else os.fspath(work_dir),
        keep=keep,
        with_dirty=with_dirty,
    )


async def run_async(
    path: str | os.PathLike[str] = ".",
    jobs: Sequence[str] | None = None,
    variables: Mapping[str, str] | None = None,
    executor: Literal["shell", "docker"] = "shell",
    concurrency: int | None = None,
    on_log: LogCallback | None = None,
    *,
    branch: str | None = None,
    tag: str | None = None,
    source: str = "push",
    needs: bool = False,
    manual: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    keep: bool = False,
    with_dirty: bool = False,
) -> PipelineResult:
    """:func:`run` in a worker thread, for asyncio code. ``on_log`` is called from that
    thread (use ``loop.call_soon_threadsafe`` to reach the event loop). Cancelling the
    awaiting task cancels the pipeline: running jobs get their ``after_script``, and the
    task ends with ``CancelledError`` once they have stopped."""
    handle = Cancel()
    task = asyncio.ensure_future(
        asyncio.to_thread(
            run,
            path,
            jobs,
            variables,
            executor,
            concurrency,
            on_log,
            branch=branch,
            tag=tag,
            source=source,
            needs=needs,
            manual=manual,
            cache_dir=cache_dir,
            work_dir=work_dir,
            keep=keep,
            with_dirty=with_dirty,
            cancel=handle,
        )
    )
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        handle.cancel()
        # The jobs' after_script runs before the thread returns; wait for it so that no
        # job process outlives the cancelled task.
        await asyncio.wait([task])
        raise
