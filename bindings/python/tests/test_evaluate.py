"""Pipeline.evaluate: which jobs GitLab creates for a commit, with what variables."""

from __future__ import annotations

from pathlib import Path

import pytest

import podci

RULES = """
variables:
  DEPLOY_ENV: staging
build:
  stage: build
  script: make
test:
  stage: test
  script: make test
  parallel: 2
docs:
  stage: test
  script: make docs
  rules:
    - changes: [docs/**/*]
release:
  stage: deploy
  script: make release
  rules:
    - if: $CI_COMMIT_TAG =~ /^v\\d+/
      variables: {DEPLOY_ENV: production}
nightly:
  stage: deploy
  script: make nightly
  rules:
    - if: $CI_PIPELINE_SOURCE == "schedule"
    - if: $FORCE_NIGHTLY == "yes"
      when: manual
review:
  stage: deploy
  script: make review
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
"""


def names(jobs: list[podci.Job]) -> list[str]:
    return [j.name for j in jobs]


def test_branch_push_creates_default_jobs_in_stage_order() -> None:
    p = podci.load(RULES)
    jobs = p.evaluate(branch="main")
    assert names(jobs) == ["build", "test 1/2", "test 2/2", "docs"]
    assert [j.id for j in jobs] == [1, 2, 3, 4]
    t = jobs[1]
    assert (t.job, t.stage, t.evaluated) == ("test", "test", True)
    assert t.variables["CI_NODE_INDEX"] == "1" and t.variables["CI_NODE_TOTAL"] == "2"
    assert t.variables["CI_COMMIT_BRANCH"] == "main"
    assert t.variables["DEPLOY_ENV"] == "staging"
    assert "CI_COMMIT_TAG" not in t.variables


def test_changed_files_decide_changes_rules() -> None:
    p = podci.load(RULES)
    assert "docs" not in names(p.evaluate(branch="feature", changed_files=["src/main.c"]))
    assert "docs" in names(p.evaluate(branch="feature", changed_files=["docs/guide/index.md"]))


def test_tags_rules_variables_and_sources() -> None:
    p = podci.load(RULES)
    tagged = p.evaluate(tag="v1.2.0")
    assert "release" in names(tagged)
    release = next(j for j in tagged if j.name == "release")
    assert release.variables["DEPLOY_ENV"] == "production"
    assert release.variables["CI_COMMIT_TAG"] == "v1.2.0"
    assert "release" not in names(p.evaluate(tag="latest"))
    assert "nightly" in names(p.evaluate(branch="main", source="schedule"))


def test_pipeline_variables_reach_rules_and_jobs() -> None:
    p = podci.load(RULES)
    jobs = p.evaluate(branch="main", variables={"FORCE_NIGHTLY": "yes", "DEPLOY_ENV": "qa"})
    nightly = next(j for j in jobs if j.name == "nightly")
    assert nightly.when == "manual"
    # Pipeline variables win over .gitlab-ci.yml ones.
    assert nightly.variables["DEPLOY_ENV"] == "qa"


def test_merge_request_pipelines() -> None:
    p = podci.load(RULES)
    jobs = p.evaluate(source="merge_request_event", merge_request=("feature", "main"))
    review = next(j for j in jobs if j.name == "review")
    assert review.variables["CI_MERGE_REQUEST_TARGET_BRANCH_NAME"] == "main"
    assert review.variables["CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"] == "feature"
    # Jobs without rules are not part of merge request pipelines (GitLab's default);
    # `changes` holds when the changed files are unknown.
    assert [j.name for j in jobs] == ["docs", "review"]
    assert "review" not in names(p.evaluate(branch="feature"))


def test_workflow_rules_can_prevent_the_pipeline() -> None:
    p = podci.load("workflow:\n  rules:\n    - if: $CI_COMMIT_TAG\nj: {script: x}\n")
    assert p.evaluate(branch="main") == []
    assert names(p.evaluate(tag="v1")) == ["j"]


def test_exists_rules_use_the_project_directory(tmp_path: Path) -> None:
    (tmp_path / ".gitlab-ci.yml").write_text(
        "docker:\n  script: docker build .\n  rules:\n    - exists: [Dockerfile]\n"
        "always: {script: x}\n"
    )
    assert names(podci.load(tmp_path).evaluate(branch="main")) == ["always"]
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert names(podci.load(tmp_path).evaluate(branch="main")) == ["docker", "always"]
    assert names(podci.load(tmp_path).evaluate(branch="main", existing_files=[])) == ["always"]
    # payload(name) evaluates a push to the default branch in the same project directory.
    assert podci.load(tmp_path).payload("docker")["job_info"]["name"] == "docker"


def test_invalid_pipeline_and_absent_needs_raise_pipeline_error() -> None:
    with pytest.raises(podci.PipelineError) as info:
        podci.load("a: {stage: nope, script: x}\n").evaluate(branch="main")
    assert info.value.diagnostics[0].message.startswith("a job: chosen stage nope does not exist")

    absent = "a: {script: x, rules: [{if: $NOPE}]}\nb: {script: x, needs: [a]}\n"
    with pytest.raises(podci.PipelineError) as info:
        podci.load(absent).evaluate(branch="main")
    (d,) = info.value.diagnostics
    assert d.message.startswith("'b' job needs 'a' job, but 'a' does not exist in the pipeline.")
    assert d.line == 2  # at the job that needs it


def test_argument_errors() -> None:
    p = podci.load(RULES)
    with pytest.raises(ValueError, match="either branch= or tag="):
        p.evaluate(branch="main", tag="v1")
    with pytest.raises(ValueError, match="40-digit"):
        p.evaluate(sha="abc")
    with pytest.raises(TypeError, match="variables"):
        p.evaluate(variables={"A": 1})  # type: ignore[dict-item]
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert p.evaluate(sha=sha)[0].variables["CI_COMMIT_SHA"] == sha
