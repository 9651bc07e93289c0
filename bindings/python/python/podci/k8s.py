"""The Kubernetes side of podci without a cluster: the Pod (and per-job Secret) podci's
Kubernetes executor creates for a job, from a payload (``Pipeline.payload``) and a
``[runners.kubernetes]`` configuration, as plain dicts ready for ``kubectl apply``, a
schema validator or a test.

Errors are :class:`podci.KubernetesError` with ``kind`` naming the problem
(``"config"``, ``"config_unknown_keys"``, ``"image_not_allowed"``, ``"no_image"``, ...).
"""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Mapping
from typing import Any

from podci._errors import KubernetesError
from podci._native import pod_for as _pod_for

__all__ = ["job_objects", "pod_for"]

_ALNUM = string.ascii_lowercase + string.digits


def job_objects(
    payload: Mapping[str, Any],
    config: Mapping[str, Any] | str,
    *,
    runner_token: str = "podci",
    concurrent_id: int = 0,
    suffix: str | None = None,
    now: float | None = None,
    job_url: str | None = None,
) -> dict[str, Any]:
    """Everything the executor would create for the job: ``{"name", "namespace", "pod",
    "secret", "warnings"}``. ``secret`` is the per-job Secret (registry credentials and
    non-public variables, so it holds secrets) or ``None``; ``warnings`` lists ``KUBERNETES_*``
    overwrites the job asked for but the configuration does not allow.

    ``config`` is the ``[runners.kubernetes]`` table as a dict, or TOML text: the section's
    keys, the section with its header, or a whole ``config.toml`` (its first runner).
    ``runner_token`` (first 8 characters), ``concurrent_id`` and ``suffix`` (default:
    random) make the Pod name as GitLab Runner's; ``now`` (Unix time, default: now) sets
    the orphan deadline annotation; ``job_url`` defaults to the payload's ``CI_JOB_URL``.
    """
    try:
        payload_json = json.dumps(payload)
        config_json = None if isinstance(config, str) else json.dumps(config)
    except (TypeError, ValueError) as e:
        raise KubernetesError(f"cannot convert to JSON: {e}", kind="payload") from e
    return _pod_for(
        payload_json,
        config_json=config_json,
        config_toml=config if isinstance(config, str) else None,
        runner_token=runner_token,
        concurrent_id=concurrent_id,
        suffix=suffix if suffix is not None else "".join(secrets.choice(_ALNUM) for _ in range(8)),
        now_unix=int(time.time() if now is None else now),
        job_url=job_url,
    )


def pod_for(
    payload: Mapping[str, Any],
    config: Mapping[str, Any] | str,
    *,
    runner_token: str = "podci",
    concurrent_id: int = 0,
    suffix: str | None = None,
    now: float | None = None,
    job_url: str | None = None,
) -> dict[str, Any]:
    """The Pod manifest (``apiVersion: v1``, ``kind: Pod``) podci's Kubernetes executor
    creates for the job; arguments as :func:`job_objects`. Pure: nothing is sent anywhere.
    Raises :class:`podci.KubernetesError`."""
    pod: dict[str, Any] = job_objects(
        payload,
        config,
        runner_token=runner_token,
        concurrent_id=concurrent_id,
        suffix=suffix,
        now=now,
        job_url=job_url,
    )["pod"]
    return pod
