"""podci.load: jobs and stages as GitLab sees them, diagnostics with positions, includes,
and the merged configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

import podci

# Our users' first pipeline (from the article podci was founded on): three stages whose
# names do not match the jobs' stages. GitLab rejects it with these messages.
SEED = """stages:
  - package
  - docker_build
  - deploy_k8s

maven-build:
  stage: package
  script: mvn package

docker-build:
  stage: build
  script: docker build .

k8s-deploy:
  stage: deploy
  script: kubectl apply -f deployment.yaml
"""

SEED_ERRORS = [
    "docker-build job: chosen stage build does not exist; available stages are .pre, package, "
    "docker_build, deploy_k8s, .post",
    "k8s-deploy job: chosen stage deploy does not exist; available stages are .pre, package, "
    "docker_build, deploy_k8s, .post",
]


def test_seed_pipeline_reports_gitlabs_messages_with_positions(tmp_path: Path) -> None:
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(SEED)
    p = podci.load(path)
    assert not p.valid
    assert [e.message for e in p.errors] == SEED_ERRORS
    first = p.errors[0]
    assert (first.severity, first.line, first.column) == ("error", 11, 3)
    assert first.file == str(path)
    assert str(first) == f"{path}:11:3: {SEED_ERRORS[0]}"
    assert p.errors[1].line == 15
    with pytest.raises(podci.PipelineError) as info:
        p.raise_for_errors()
    assert info.value.diagnostics == p.errors
    assert SEED_ERRORS[0] in str(info.value)
    assert "(and 1 more)" in info.value.message
    assert isinstance(info.value, podci.Error)


def test_seed_pipeline_as_text_and_from_a_directory(tmp_path: Path) -> None:
    from_text = podci.load(SEED)
    assert [e.message for e in from_text.errors] == SEED_ERRORS
    assert from_text.errors[0].file == ".gitlab-ci.yml"
    (tmp_path / ".gitlab-ci.yml").write_text(SEED)
    from_dir = podci.load(tmp_path)
    assert [e.message for e in from_dir.errors] == SEED_ERRORS


def test_fixed_seed_pipeline_is_valid_with_jobs_and_stages() -> None:
    fixed = SEED.replace("stage: build", "stage: docker_build").replace("stage: deploy\n", "stage: deploy_k8s\n")
    p = podci.load(fixed)
    assert p.valid, p.errors
    assert p.errors == [] and p.warnings == []
    assert p.stages == [".pre", "package", "docker_build", "deploy_k8s", ".post"]
    assert [(j.name, j.stage) for j in p.jobs] == [
        ("maven-build", "package"),
        ("docker-build", "docker_build"),
        ("k8s-deploy", "deploy_k8s"),
    ]


JOBS = """
default:
  image: maven:3.9
variables:
  GLOBAL: g
stages: [build, test, deploy]
compile:
  stage: build
  script: mvn package
  variables:
    MAVEN_OPTS: -Xmx1g
    DETAILED: {value: "on", expand: false}
unit:
  image: {name: "eclipse-temurin:21", entrypoint: [""]}
  needs: [compile, {job: lint, optional: true, artifacts: false}]
  script: mvn test
  rules:
    - if: $CI_COMMIT_TAG
      when: never
    - when: on_success
lint:
  stage: test
  script: mvn checkstyle:check
  allow_failure: true
deploy:
  stage: deploy
  script: kubectl apply -f k8s/
  when: manual
matrix:
  stage: test
  script: make
  parallel:
    matrix:
      - JDK: ["17", "21"]
"""


def test_job_attributes() -> None:
    p = podci.load(JOBS)
    assert p.valid, p.errors
    jobs = {j.name: j for j in p.jobs}
    compile_ = jobs["compile"]
    assert (compile_.stage, compile_.when, compile_.allow_failure) == ("build", "on_success", False)
    assert compile_.needs is None
    assert compile_.image == "maven:3.9"  # from default:
    assert compile_.variables == {"MAVEN_OPTS": "-Xmx1g", "DETAILED": "on"}
    assert compile_.rules is None
    assert compile_.line == 7
    assert compile_.evaluated is False and compile_.id is None

    unit = jobs["unit"]
    assert unit.stage == "test"
    assert unit.image == "eclipse-temurin:21"
    assert unit.needs is not None
    assert [(n.job, n.artifacts, n.optional) for n in unit.needs] == [
        ("compile", True, False),
        ("lint", False, True),
    ]
    assert unit.rules == [{"if": "$CI_COMMIT_TAG", "when": "never"}, {"when": "on_success"}]
    assert unit.config["script"] == "mvn test"

    assert jobs["lint"].allow_failure is True
    # GitLab's default: a manual job without rules may fail.
    assert (jobs["deploy"].when, jobs["deploy"].allow_failure) == ("manual", True)
    assert jobs["matrix"].instances == ["matrix: [17]", "matrix: [21]"]
    assert p.job("unit") is not None and p.job("nope") is None


def test_yaml_syntax_error_has_a_position() -> None:
    p = podci.load("job:\n  script: [a, b\n  stage: x\n")
    assert not p.valid
    (err,) = p.errors
    assert err.line is not None and err.line >= 2
    assert err.column is not None


def test_empty_and_jobless_configurations() -> None:
    assert [e.message for e in podci.load("\n").errors] == ["Please provide content of .gitlab-ci.yml"]
    assert [e.message for e in podci.load("rubocop:\n  scriptt: [x]\n").errors] == [
        "jobs rubocop config should implement the script:, run:, or trigger: keyword",
        "jobs config should contain at least one visible job",
    ]


def test_includes_from_the_files_directory(tmp_path: Path) -> None:
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "build.yml").write_text(".base:\n  image: gradle:8\n  script: gradle build\n")
    (tmp_path / "ci" / "broken.yml").write_text("other:\n  stage: nowhere\n  script: x\n")
    (tmp_path / ".gitlab-ci.yml").write_text(
        "include:\n  - local: ci/build.yml\nbuild:\n  extends: .base\n  variables: {A: '1'}\n"
    )
    p = podci.load(tmp_path / ".gitlab-ci.yml")
    assert p.valid, p.errors
    assert p.included == ["ci/build.yml"]
    build = p.job("build")
    assert build is not None and build.image == "gradle:8"
    merged = p.merged()
    assert merged["build"] == {
        "extends": ".base",
        "image": "gradle:8",
        "script": "gradle build",
        "variables": {"A": "1"},
    }
    assert "include" not in merged

    # An error inside an included file points into that file.
    (tmp_path / ".gitlab-ci.yml").write_text("include: ci/broken.yml\nbuild: {script: x}\n")
    p = podci.load(tmp_path)
    (err,) = p.errors
    assert err.file == "ci/broken.yml"
    assert err.message.startswith("other job: chosen stage nowhere does not exist")
    assert (err.line, err.column) == (2, 3)  # at its stage:


def test_include_dir_for_text_and_missing_includes(tmp_path: Path) -> None:
    (tmp_path / "jobs.yml").write_text("from-include:\n  script: echo hi\n")
    text = "include: jobs.yml\nmain: {script: x}\n"
    with_dir = podci.load(text, include_dir=tmp_path)
    assert [j.name for j in with_dir.jobs] == ["from-include", "main"]
    without = podci.load(text)
    assert not without.valid
    assert "jobs.yml" in without.errors[0].message


def test_merged_resolves_extends_and_references_and_round_trips() -> None:
    text = """
.setup:
  before_script: [echo setup]
.base:
  image: ruby:3
  variables: {A: a, B: b}
job:
  extends: .base
  variables: {B: override}
  script:
    - !reference [.setup, before_script]
    - echo run
"""
    p = podci.load(text)
    assert p.valid, p.errors
    job = p.merged()["job"]
    assert job["image"] == "ruby:3"
    assert job["variables"] == {"A": "a", "B": "override"}
    assert job["script"] == [["echo setup"], "echo run"]
    again = podci.load(p.merged_yaml())
    assert again.merged() == p.merged()


def test_path_handling(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        podci.load(tmp_path / "missing.yml")
    with pytest.raises(FileNotFoundError):
        podci.load(str(tmp_path / "missing.gitlab-ci.yml"))
    with pytest.raises(FileNotFoundError):
        podci.load(tmp_path / "no-such-dir")
    # A one-line string that names no file is YAML.
    assert [j.name for j in podci.load("only: {script: x}").jobs] == ["only"]


def test_objects_are_printable_and_comparable() -> None:
    p = podci.load(SEED)
    assert repr(p).startswith("Pipeline(file='.gitlab-ci.yml', valid=False")
    d = p.errors[0]
    assert "line=11" in repr(d)
    assert d == podci.load(SEED).errors[0]
    assert len({d, podci.load(SEED).errors[0]}) == 1
    job = podci.load(JOBS).job("unit")
    assert job is not None and job.needs is not None
    assert repr(job.needs[0]) == "Need(job='compile', artifacts=True, optional=False, external=False)"


def test_warnings_carry_gitlabs_message_line_and_column() -> None:
    p = podci.load("build:\n  script: x\n  rules:\n    - if: $A\n    - when: on_success\n")
    assert p.valid and p.errors == []
    assert len(p.warnings) == 1
    w = p.warnings[0]
    assert w.severity == "warning"
    assert w.message.startswith(
        "jobs:build may allow multiple pipelines to run for a single action due to "
        "`rules:when` clause with no `workflow:rules` - read more: https://docs.gitlab.com/"
    )
    assert (w.line, w.column) == (5, 7)
    with_workflow = podci.load("workflow:\n  rules: [{if: $A}]\n" "build:\n  script: x\n  rules: [{when: always}]\n")
    assert with_workflow.warnings == []
