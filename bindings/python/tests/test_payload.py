"""Pipeline.payload: the job payload GitLab sends a runner, checked against GitLab's own
recorded request/response pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import podci

# GitLab's recorded payloads live next to the repository (as for podci-model's own test).
CONFORMANCE = Path(__file__).resolve().parents[4] / "shared/conformance/gitlab/runner-payloads"

PIPELINE = """
default:
  before_script: [echo before]
build:
  image: maven:3.9
  script: [mvn package]
  after_script: [echo after]
  variables: {MAVEN_OPTS: -Xmx1g}
  artifacts: {paths: [target/*.jar]}
deploy:
  stage: deploy
  script: kubectl apply -f k8s/
  needs: [build]
  rules:
    - if: $CI_COMMIT_BRANCH == "main"
"""


def variables(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["key"]: v for v in payload["variables"]}


def test_payload_of_an_evaluated_job() -> None:
    p = podci.load(PIPELINE)
    jobs = p.evaluate(branch="main", variables={"DEPLOY_TOKEN": "hunter2"})
    build = p.payload(jobs[0], token="job-token-123")
    assert build["job_info"]["name"] == "build"
    assert build["job_info"]["stage"] == "test"
    assert build["image"]["name"] == "maven:3.9"
    steps = {s["name"]: s for s in build["steps"]}
    assert steps["script"]["script"] == ["echo before", "mvn package"]
    assert steps["after_script"]["script"] == ["echo after"]
    assert build["artifacts"][0]["paths"] == ["target/*.jar"]
    v = variables(build)
    assert v["CI_JOB_TOKEN"]["value"] == "job-token-123" and v["CI_JOB_TOKEN"]["masked"] is True
    assert v["MAVEN_OPTS"]["value"] == "-Xmx1g" and v["MAVEN_OPTS"]["public"] is True
    # Pipeline variables are not public.
    assert v["DEPLOY_TOKEN"]["public"] is False
    assert v["CI_COMMIT_BRANCH"]["value"] == "main"

    deploy = p.payload(jobs[1])
    assert deploy["dependencies"][0]["name"] == "build"
    assert deploy["id"] == jobs[1].id


def test_payload_by_name_and_for_absent_jobs() -> None:
    p = podci.load(PIPELINE)
    assert p.payload("deploy")["job_info"]["name"] == "deploy"  # push to main by default
    configured = p.job("build")
    assert configured is not None
    assert p.payload(configured)["job_info"]["name"] == "build"

    feature = p.evaluate(branch="feature")
    assert [j.name for j in feature] == ["build"]
    with pytest.raises(podci.PipelineError) as info:
        p.payload("nope")
    assert info.value.job == "nope" and "no job named 'nope'" in info.value.message

    other = podci.load(PIPELINE)
    with pytest.raises(podci.PipelineError, match="another Pipeline"):
        other.payload(feature[0])
    with pytest.raises(TypeError):
        p.payload(42)  # type: ignore[arg-type]


def conformance_cases() -> list[Path]:
    return sorted(CONFORMANCE.glob("*.yml")) if CONFORMANCE.is_dir() else []


@pytest.mark.parametrize("case", conformance_cases(), ids=lambda c: c.stem)
def test_payload_matches_gitlab(case: Path) -> None:
    doc = yaml.safe_load(case.read_text())
    p = podci.load(yaml.safe_dump(doc["gitlab_ci"], sort_keys=False))
    assert p.valid, p.errors
    (job,) = p.evaluate(branch="main")
    payload = p.payload(job)
    for key, expected in doc["request_response"].items():
        assert payload[key] == expected, key


def test_conformance_fixtures_exist() -> None:
    if not conformance_cases():
        pytest.skip(f"{CONFORMANCE} is not on this machine")
    assert len(conformance_cases()) >= 10
