"""podci's exception hierarchy.

Every error podci raises on purpose is a :class:`podci.Error`; the subclass says which part
failed, and the attributes carry the Rust error's structured fields so scripts can react
without parsing messages. Secrets (passwords, tokens) never appear in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from podci._native import Diagnostic


class Error(Exception):
    """Base class of all podci errors. ``message`` is the text shown to a user."""

    message: str

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PipelineError(Error):
    """A pipeline cannot be used: its configuration is invalid, GitLab would not create
    it for this commit, or a job asked for is not in it.

    ``diagnostics`` holds every error (with file, line and column) when the configuration
    is at fault; ``job`` names the job the call was about, if any.
    """

    diagnostics: list[Diagnostic]
    job: str | None

    def __init__(
        self,
        message: str,
        *,
        diagnostics: Sequence[Diagnostic] = (),
        job: str | None = None,
    ) -> None:
        super().__init__(message)
        self.diagnostics = list(diagnostics)
        self.job = job


class RegistryError(Error):
    """Building, pushing, pulling or inspecting an image failed.

    ``kind`` names the failure (``"registry"``, ``"auth"``, ``"http"``, ``"io"``,
    ``"invalid_reference"``, ``"invalid_content"``, ``"credentials"``, ...); ``registry``
    and ``operation`` say where, ``status`` is the HTTP status the registry answered,
    ``codes`` its error codes (``["MANIFEST_UNKNOWN"]``), ``path`` the local file involved.
    """

    kind: str
    registry: str | None
    operation: str | None
    status: int | None
    codes: list[str]
    path: str | None

    def __init__(
        self,
        message: str,
        *,
        kind: str = "registry",
        registry: str | None = None,
        operation: str | None = None,
        status: int | None = None,
        codes: Sequence[str] = (),
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.registry = registry
        self.operation = operation
        self.status = status
        self.codes = list(codes)
        self.path = path


class KubernetesError(Error):
    """A Kubernetes API call failed (deployments and Pods; used by podci.deploy and
    podci.k8s).

    ``kind`` names the failure, ``namespace``/``name`` the object, ``status`` the HTTP
    status of the API server, ``reason`` its ``Status.reason`` (``"NotFound"``, ...).
    A failed or timed-out rollout (``kind`` ``"rollout_failed"``/``"timeout"``) names the
    workload (``deployment/web``) and lists its failing Pods in ``pods``: dicts with
    ``name``, ``reason`` (``CrashLoopBackOff``, ``ErrImagePull``, ...), ``events`` and
    ``logs`` (container name to its last log lines).
    """

    kind: str
    namespace: str | None
    name: str | None
    status: int | None
    reason: str | None
    pods: list[dict[str, Any]]

    def __init__(
        self,
        message: str,
        *,
        kind: str = "api",
        namespace: str | None = None,
        name: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        pods: Sequence[dict[str, Any]] = (),
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.status = status
        self.reason = reason
        self.pods = list(pods)
