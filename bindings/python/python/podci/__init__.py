"""podci from Python: GitLab CI pipelines and daemonless container images.

>>> import podci
>>> p = podci.load("build:\\n  script: make\\n")
>>> [j.name for j in p.jobs]
['build']

Modules:

- ``podci`` (this one): :func:`load`, :class:`Pipeline`, :class:`Job`, :class:`Need`,
  :class:`Diagnostic`, :func:`run` / :func:`run_async` (local pipelines, as
  ``podci exec``) with :class:`PipelineResult` and :class:`JobResult`, and the exceptions.
- :mod:`podci.image`: ``append``, ``copy``, ``inspect`` (and ``*_async`` variants).
- :mod:`podci.k8s`: ``pod_for`` (the Pod podci's Kubernetes executor creates for a job).
- :func:`deploy` / :func:`deploy_async`: apply manifests with images set by container name
  and wait for the rollout (:class:`DeployResult`), as ``podci deploy``.
"""

from __future__ import annotations

import os
from pathlib import Path

from podci import image, k8s
from podci._deploy import deploy, deploy_async
from podci._errors import Error, KubernetesError, PipelineError, RegistryError
from podci._native import (
    AppliedObject,
    Cancel,
    DeployResult,
    Diagnostic,
    Job,
    JobResult,
    Need,
    Pipeline,
    PipelineResult,
    RolloutStatus,
    __version__,
    load_text,
)
from podci._run import LogCallback, run, run_async

__all__ = [
    "AppliedObject",
    "Cancel",
    "DeployResult",
    "Diagnostic",
    "Error",
    "Job",
    "JobResult",
    "KubernetesError",
    "LogCallback",
    "Need",
    "Pipeline",
    "PipelineError",
    "PipelineResult",
    "RegistryError",
    "RolloutStatus",
    "__version__",
    "deploy",
    "deploy_async",
    "image",
    "k8s",
    "load",
    "run",
    "run_async",
]

_CONFIG_SUFFIXES = (".yml", ".yaml")


def _is_path(value: str | os.PathLike[str]) -> bool:
    if isinstance(value, os.PathLike):
        return True
    if "\n" in value:
        return False
    if os.path.exists(value):
        return True
    # A one-line string that names no file is YAML text, unless it looks like a file name:
    # then a missing file should be an error, not a confusing YAML diagnostic.
    return value.endswith(_CONFIG_SUFFIXES) and ": " not in value


def load(
    path_or_text: str | os.PathLike[str],
    *,
    include_dir: str | os.PathLike[str] | None = None,
) -> Pipeline:
    """Loads and validates a ``.gitlab-ci.yml``.

    ``path_or_text`` is a path (a file, or a directory holding ``.gitlab-ci.yml``) or the
    YAML text itself: a ``str`` containing a newline, or one that names no existing file and
    does not end in ``.yml``/``.yaml``, is text.

    ``include_dir`` is the repository root that ``include: local:`` paths are relative to.
    It defaults to the file's directory; for text there is none, so includes cannot be read
    unless it is given.

    An invalid configuration does not raise: its problems are in ``Pipeline.errors`` (call
    ``raise_for_errors()`` to raise :class:`PipelineError`). A file that cannot be read
    raises :class:`OSError` (``FileNotFoundError`` when it does not exist).
    """
    if _is_path(path_or_text):
        path = Path(path_or_text)
        if path.is_dir():
            path = path / ".gitlab-ci.yml"
        text = path.read_text(encoding="utf-8")
        root = Path(include_dir) if include_dir is not None else path.parent
        name = str(path)
        return load_text(name, text, str(root))
    text = str(path_or_text)
    root_text = str(include_dir) if include_dir is not None else None
    return load_text(".gitlab-ci.yml", text, root_text)
