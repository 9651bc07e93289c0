"""podci.run / run_async: real pipelines in real git repositories, run by the shell
executor (bash processes) through the runner library, as ``podci exec`` runs them."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import require

import podci


def project(tmp_path: Path, ci: str, files: dict[str, str] | None = None) -> Path:
    """A git repository on ``main`` holding ``.gitlab-ci.yml``, committed."""
    git = require("git")
    require("bash")
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    (repo / ".gitlab-ci.yml").write_text(ci)
    (repo / ".gitignore").write_text(".podci/logs/\n")
    for name, text in (files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "first commit"]):
        subprocess.run(
            [git, "-c", "user.name=Tester", "-c", "user.email=t@example.com", *args],
            cwd=repo, check=True, capture_output=True,
        )
    return repo


def run(repo: Path, **kwargs: Any) -> podci.PipelineResult:
    """podci.run with caches and working copies under the test's directory."""
    return podci.run(repo, cache_dir=repo.parent / "cache", work_dir=repo.parent / "work", **kwargs)


PIPELINE = """
stages: [build, test]
build:
  stage: build
  script:
    - echo "building $CI_COMMIT_REF_NAME for $TARGET"
    - mkdir -p out && echo built-artifact > out/app.txt
  artifacts: {paths: [out/]}
test:
  stage: test
  script:
    - cat out/app.txt
    - test "$(cat app.py)" = "print('hi')"
lint:
  stage: test
  script: [echo linting, exit 3]
  allow_failure: true
"""


def test_runs_stages_with_artifacts_and_reports_each_job(tmp_path: Path) -> None:
    repo = project(tmp_path, PIPELINE, {"app.py": "print('hi')"})
    lines: list[tuple[str, str]] = []
    result = run(repo, variables={"TARGET": "linux/amd64"}, on_log=lambda job, line: lines.append((job, line)))

    assert result.created and result.status == "success" and result.ok
    assert result.has_warnings  # lint failed, allowed
    assert result.ref_name == "main" and not result.tag and len(result.sha) == 40
    assert [j.name for j in result.jobs] == ["build", "test", "lint"]

    build, test, lint = result.jobs
    assert (build.stage, build.status, build.attempts) == ("build", "success", 1)
    assert build.duration is not None and build.duration > 0
    assert "building main for linux/amd64" in build.log
    assert "\x1b" not in build.log and "section_start" not in build.log
    assert build.log_path is not None and Path(build.log_path).is_file()
    assert Path(build.log_path).parent == Path(result.logs_dir)
    assert "built-artifact" in test.log  # the artifact of the earlier stage arrived
    assert test.ok and test.exit_code is None and test.failure_reason is None

    assert (lint.status, lint.allowed_failure, lint.ok) == ("failed", True, True)
    assert (lint.exit_code, lint.failure_reason) == (3, "script_failure")
    found = result.job("lint")
    assert found is not None and (found.name, found.exit_code) == ("lint", 3)
    assert result.job("nope") is None

    # on_log saw each job's lines, in order, as the cleaned log has them.
    for job in result.jobs:
        streamed = [line for j, line in lines if j == job.name]
        assert streamed == job.log.splitlines(), job.name


def test_a_failing_job_fails_the_pipeline_and_skips_later_stages(tmp_path: Path) -> None:
    repo = project(
        tmp_path,
        "stages: [a, b]\n"
        "broken: {stage: a, script: ['echo about to fail', 'false'], after_script: ['echo cleanup ran']}\n"
        "later: {stage: b, script: [echo never]}\n",
    )
    result = run(repo)
    assert result.status == "failed" and not result.ok and not result.canceled
    broken, later = result.jobs
    assert (broken.status, broken.exit_code, broken.failure_reason) == ("failed", 1, "script_failure")
    assert "cleanup ran" in broken.log
    assert (later.status, later.duration, later.attempts, later.log) == ("skipped", None, 0, "")


def test_jobs_selects_and_needs_adds_dependencies(tmp_path: Path) -> None:
    repo = project(tmp_path, PIPELINE, {"app.py": "print('hi')"})
    only = run(repo, jobs=["lint"], concurrency=1)
    assert [(j.name, j.status) for j in only.jobs] == [("lint", "failed")]
    with_needs = run(repo, jobs=["test"], needs=True)
    assert [(j.name, j.status) for j in with_needs.jobs] == [("build", "success"), ("test", "success")]
    assert with_needs.pipeline_id == only.pipeline_id + 1

    with pytest.raises(podci.PipelineError) as e:
        run(repo, jobs=["deploy"])
    assert e.value.job == "deploy"
    assert "no job \"deploy\" in this pipeline; jobs are: build, test, lint" in str(e.value)


def test_invalid_configuration_raises_with_positions(tmp_path: Path) -> None:
    repo = project(tmp_path, "build:\n  stage: compile\n  script: make\n")
    with pytest.raises(podci.PipelineError) as e:
        run(repo)
    (d,) = e.value.diagnostics
    assert (d.file, d.line, d.column) == (".gitlab-ci.yml", 2, 3)
    assert "chosen stage compile does not exist" in d.message
    assert not (repo / ".podci" / "logs").exists() or not any((repo / ".podci" / "logs").iterdir())


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        podci.run(tmp_path)
    repo = project(tmp_path, "a: {script: [echo a]}\n")
    with pytest.raises(ValueError, match="unknown executor"):
        run(repo, executor="podman")
    with pytest.raises(ValueError, match="not a valid variable name"):
        run(repo, variables={"A=B": "c"})
    with pytest.raises(ValueError, match="concurrency"):
        run(repo, concurrency=0)


def test_workflow_rules_that_create_no_pipeline(tmp_path: Path) -> None:
    repo = project(tmp_path, "workflow: {rules: [{if: $CI_COMMIT_TAG}]}\na: {script: [echo a]}\n")
    result = run(repo)
    assert not result.created and result.jobs == [] and result.status == "skipped"
    assert run(repo, tag="v1.0").status == "success"


def test_on_log_streams_lines_while_the_job_runs(tmp_path: Path) -> None:
    # The job waits for a file that only on_log creates, on seeing the job's first line:
    # if lines were delivered after the job, it would time out and fail.
    flag = tmp_path / "flag"
    repo = project(
        tmp_path,
        "wait:\n  script:\n"
        "    - echo ready\n"
        f"    - for i in $(seq 300); do test -e {flag} && break; sleep 0.1; done\n"
        f"    - test -e {flag} && echo saw-flag\n",
    )
    seen: list[str] = []

    def on_log(job: str, line: str) -> None:
        seen.append(line)
        if line == "ready":
            flag.touch()

    result = run(repo, on_log=on_log)
    assert result.ok, result.jobs[0].log
    assert seen.index("ready") < seen.index("saw-flag")


def test_the_run_releases_the_gil(tmp_path: Path) -> None:
    # A Python thread must make progress while the pipeline runs: the job waits for it.
    flag = tmp_path / "from-thread"
    repo = project(
        tmp_path,
        f"wait:\n  script:\n    - for i in $(seq 300); do test -e {flag} && break; sleep 0.1; done\n"
        f"    - test -e {flag}\n",
    )
    started = threading.Event()

    def writer() -> None:
        started.wait()
        time.sleep(0.3)
        flag.touch()

    t = threading.Thread(target=writer)
    t.start()
    started.set()
    result = run(repo)
    t.join()
    assert result.ok


def test_an_exception_in_on_log_cancels_and_propagates(tmp_path: Path) -> None:
    marker = tmp_path / "after-script-ran"
    repo = project(
        tmp_path,
        "slow:\n  script: [echo go, sleep 60, echo never]\n"
        f"  after_script: ['echo $CI_JOB_STATUS > {marker}']\n",
    )

    class Stop(Exception):
        pass

    def on_log(job: str, line: str) -> None:
        if line == "go":
            raise Stop(line)

    t0 = time.monotonic()
    with pytest.raises(Stop):
        run(repo, on_log=on_log)
    assert time.monotonic() - t0 < 50  # canceled, not waited out
    assert marker.read_text().strip() == "canceled"


def test_cancel_handle_from_another_thread(tmp_path: Path) -> None:
    repo = project(tmp_path, "stages: [a, b]\nslow: {stage: a, script: [echo go, sleep 60]}\nnext: {stage: b, script: [echo next]}\n")
    cancel = podci.Cancel()
    result = run(repo, cancel=cancel, on_log=lambda job, line: cancel.cancel() if line == "go" else None)
    assert cancel.cancelled and result.canceled and result.status == "canceled"
    assert [(j.name, j.status) for j in result.jobs] == [("slow", "canceled"), ("next", "canceled")]


def test_run_async_runs_pipelines_concurrently_and_cancels(tmp_path: Path) -> None:
    a = project(tmp_path / "a", "a:\n  script: [echo from-a]\n")
    b = project(tmp_path / "b", "b:\n  script: [echo from-b]\n")
    marker = tmp_path / "after"
    slow = project(
        tmp_path / "slow",
        f"slow:\n  script: [echo go, sleep 60]\n  after_script: ['echo $CI_JOB_STATUS > {marker}']\n",
    )

    async def main() -> tuple[podci.PipelineResult, podci.PipelineResult]:
        ra, rb = await asyncio.gather(
            podci.run_async(a, cache_dir=tmp_path / "cache-a", work_dir=tmp_path / "work-a"),
            podci.run_async(b, cache_dir=tmp_path / "cache-b", work_dir=tmp_path / "work-b"),
        )
        go = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_log(job: str, line: str) -> None:
            if line == "go":
                loop.call_soon_threadsafe(go.set)

        task = asyncio.create_task(
            podci.run_async(slow, on_log=on_log, cache_dir=tmp_path / "c", work_dir=tmp_path / "w")
        )
        await go.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ra, rb

    ra, rb = asyncio.run(main())
    assert ra.ok and "from-a" in ra.jobs[0].log
    assert rb.ok and "from-b" in rb.jobs[0].log
    # The cancelled task waited for the job's after_script.
    assert marker.read_text().strip() == "canceled"
