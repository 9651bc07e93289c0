"""podci.k8s.pod_for: the Pod podci's Kubernetes executor creates, from a payload made
by Pipeline.payload, validated against the Kubernetes 1.33 schema with
kubernetes-validate (strict: unknown fields are errors)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from conftest import IN_CI

import podci
from podci import k8s

PIPELINE = """
build:
  image: maven:3.9-eclipse-temurin-17
  services:
    - name: postgres:16
      alias: db
  variables:
    MAVEN_OPTS: -Xmx1g
    KUBERNETES_CPU_LIMIT: "2"
  script: [mvn package]
"""

CONFIG: dict[str, Any] = {
    "namespace": "gitlab-runners",
    "image": "alpine:3.20",
    "cpu_limit": "1",
    "cpu_limit_overwrite_max_allowed": "4",
    "memory_request": "512Mi",
    "volumes": {"pvc": [{"name": "maven-cache-$CI_CONCURRENT_ID", "mount_path": "/root/.m2"}]},
}

TOML_BODY = """
namespace = "gitlab-runners"
image = "alpine:3.20"
cpu_limit = "1"
cpu_limit_overwrite_max_allowed = "4"
memory_request = "512Mi"
[[volumes.pvc]]
name = "maven-cache-$CI_CONCURRENT_ID"
mount_path = "/root/.m2"
"""


def validate(obj: dict[str, Any]) -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        message = "kubernetes-validate is not installed (.ci/setup.d/50-k8s.sh installs it)"
        if IN_CI:
            pytest.fail(message)
        print(f"\n!!!!! SKIPPING schema validation: {message} !!!!!", file=sys.stderr)
        pytest.skip(message)
    kubernetes_validate.validate(obj, "1.33.0", strict=True)


def payload() -> dict[str, Any]:
    p = podci.load(PIPELINE)
    (job,) = p.evaluate(branch="main")
    return p.payload(job, token="glcbt-secret-job-token")


def build(config: dict[str, Any] | str) -> dict[str, Any]:
    return k8s.job_objects(payload(), config, runner_token="glrt-AbCd1234xyz", concurrent_id=2,
                           suffix="q1w2e3r4", now=1_800_000_000)


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod["spec"]["containers"] if c["name"] == name]
    (c,) = found
    return c


def test_pod_for_a_payload_validates_and_is_what_the_config_says() -> None:
    objects = build(CONFIG)
    pod = objects["pod"]
    validate(pod)
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"]["namespace"] == objects["namespace"] == "gitlab-runners"
    assert pod["metadata"]["name"] == objects["name"]
    assert objects["name"].startswith("runner-glrtabcd-project-") and objects["name"].endswith("-concurrent-2-q1w2e3r4")
    assert len(objects["name"]) <= 63

    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names[:2] == ["build", "helper"] and "db" in names
    b = container(pod, "build")
    assert b["image"] == "maven:3.9-eclipse-temurin-17"
    assert container(pod, "db")["image"] == "postgres:16"
    # KUBERNETES_CPU_LIMIT overwrites cpu_limit within cpu_limit_overwrite_max_allowed.
    assert b["resources"]["limits"]["cpu"] == "2"
    assert b["resources"]["requests"]["memory"] == "512Mi"
    assert "NET_RAW" in b["securityContext"]["capabilities"]["drop"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["maven-cache-2"]
    env = {e["name"]: e for e in b.get("env", [])}
    assert env["MAVEN_OPTS"]["value"] == "-Xmx1g"

    # The job token is not public: it is in the Secret, never in the Pod's plain env.
    assert "glcbt-secret-job-token" not in str(pod)
    secret = objects["secret"]
    assert secret is not None and secret["kind"] == "Secret"
    validate(secret)
    assert objects["warnings"] == []

    # pod_for is the same Pod.
    assert k8s.pod_for(payload(), CONFIG, runner_token="glrt-AbCd1234xyz", concurrent_id=2,
                       suffix="q1w2e3r4", now=1_800_000_000) == pod


def test_config_as_toml_text_in_each_form() -> None:
    expected = build(CONFIG)
    assert build(TOML_BODY) == expected
    assert build("[runners.kubernetes]\n" + TOML_BODY.replace("[[volumes.pvc]]", "[[runners.kubernetes.volumes.pvc]]")) == expected
    config_toml = (
        'concurrent = 10\n[[runners]]\nname = "k8s"\nexecutor = "kubernetes"\n[runners.kubernetes]\n'
        + TOML_BODY.replace("[[volumes.pvc]]", "[[runners.kubernetes.volumes.pvc]]")
    )
    assert build(config_toml) == expected


def test_defaults_make_a_unique_name_and_take_the_job_url() -> None:
    a = k8s.job_objects(payload(), {"image": "alpine"})
    b = k8s.job_objects(payload(), {"image": "alpine"})
    assert a["name"] != b["name"]
    assert a["namespace"] == "default"
    validate(a["pod"])


@pytest.mark.parametrize(
    ("config", "kind", "words"),
    [
        ({"image": "alpine", "privileged_mode": True}, "config_unknown_keys", "privileged_mode"),
        ({"allowed_images": ["registry.example.com/*"]}, "image_not_allowed", "maven:3.9-eclipse-temurin-17"),
        ({"cpu_limit": "1", "cpu_limit_overwrite_max_allowed": "1"}, "overwrite_too_high", "KUBERNETES_CPU_LIMIT=2"),
        ("image = [", "config", "invalid [runners.kubernetes] configuration"),
    ],
)
def test_errors_are_kubernetes_errors_with_a_kind(config: dict[str, Any] | str, kind: str, words: str) -> None:
    with pytest.raises(podci.KubernetesError) as e:
        k8s.pod_for(payload(), config)
    assert e.value.kind == kind
    assert words in str(e.value)
    assert isinstance(e.value, podci.Error)


def test_a_payload_without_image_needs_a_default_image() -> None:
    p = podci.load("build: {script: [make]}\n")
    with pytest.raises(podci.KubernetesError) as e:
        k8s.pod_for(p.payload("build"), {"namespace": "ci"})
    assert e.value.kind == "no_image"
    with pytest.raises(podci.KubernetesError) as bad:
        k8s.pod_for({"id": "not a number"}, {"image": "alpine"})
    assert bad.value.kind == "payload"
