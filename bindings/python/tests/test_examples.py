"""The scripts in examples/ do what their docstrings promise, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import FakeKube, Registry
from test_load import SEED

from podci import image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_lint_monorepo(tmp_path: Path) -> None:
    (tmp_path / "services" / "billing").mkdir(parents=True)
    (tmp_path / "services" / "billing" / ".gitlab-ci.yml").write_text(SEED)
    (tmp_path / "services" / "web" / "ci").mkdir(parents=True)
    (tmp_path / "services" / "web" / "ci" / "jobs.yml").write_text(
        "test:\n  script: npm test\ndocs:\n  script: make docs\n  rules: [{if: $CI_COMMIT_TAG}]\n"
    )
    (tmp_path / "services" / "web" / ".gitlab-ci.yml").write_text("include: ci/jobs.yml\n")
    (tmp_path / "node_modules" / "x").mkdir(parents=True)
    (tmp_path / "node_modules" / "x" / ".gitlab-ci.yml").write_text("broken: [")

    out = run("lint_monorepo.py", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    billing = tmp_path / "services" / "billing" / ".gitlab-ci.yml"
    assert f"{billing}:11:3: docker-build job: chosen stage build does not exist; available stages are " \
        ".pre, package, docker_build, deploy_k8s, .post" in lines
    web = tmp_path / "services" / "web" / ".gitlab-ci.yml"
    assert f"{web}: ok (2 jobs; a push to main runs test)" in lines
    assert lines[-1] == "1 of 2 pipelines valid"

    (tmp_path / "services" / "billing" / ".gitlab-ci.yml").unlink()
    ok = run("lint_monorepo.py", str(tmp_path), "--branch", "develop", cwd=tmp_path)
    assert ok.returncode == 0 and "a push to develop runs test" in ok.stdout


def test_build_and_push(registry: Registry, tmp_path: Path, isolated_credentials: Path) -> None:
    context = tmp_path / "dist"
    context.mkdir()
    (context / "app.jar").write_bytes(b"PK\x03\x04 not really a jar")
    tag = f"{registry.host}/team/service:1.4.2"
    out = run(
        "build_and_push.py",
        "--context", str(context), "--tag", tag, "--also-tag", "latest",
        "--entrypoint", "java -jar /app/app.jar", "--env", "JAVA_OPTS=-Xmx256m",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"{tag}@sha256:")
    info = image.inspect(f"{registry.host}/team/service:latest")
    assert first == f"{tag}@{info['digest']}"
    assert info["config"]["Entrypoint"] == ["java", "-jar", "/app/app.jar"]
    assert "JAVA_OPTS=-Xmx256m" in info["config"]["Env"]
    assert info["config"]["WorkingDir"] == "/app"

    denied = run("build_and_push.py", "--context", str(context), "--tag", "127.0.0.1:1/x/y:z", cwd=tmp_path)
    assert denied.returncode == 1 and denied.stderr.startswith("push failed: ")


def test_what_runs(tmp_path: Path) -> None:
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text(
        "build: {stage: build, script: make}\n"
        "release: {stage: deploy, script: make release, rules: [{if: $CI_COMMIT_TAG}]}\n"
    )
    branch = run("what_runs.py", str(ci), "--branch", "main", cwd=tmp_path)
    assert branch.returncode == 0, branch.stderr
    assert branch.stdout.splitlines() == ["build: build (on_success)"]
    tagged = run("what_runs.py", str(ci), "--tag", "v1", "--payload", "release", cwd=tmp_path)
    assert tagged.returncode == 0, tagged.stderr
    assert tagged.stdout.startswith("build: build (on_success)\ndeploy: release (on_success)\n{")
    assert '"name": "release"' in tagged.stdout


def test_run_pipeline(tmp_path: Path) -> None:
    from test_run import project

    repo = project(
        tmp_path,
        "stages: [build, test]\n"
        "build: {stage: build, script: ['echo compiling $FLAVOUR']}\n"
        "test: {stage: test, script: ['echo testing', 'exit 4']}\n",
    )
    env_home = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": os.environ["PATH"]}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "run_pipeline.py"), str(repo), "--var", "FLAVOUR=release"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env_home,
    )
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert "[build] compiling release" in lines
    assert lines.index("[build] compiling release") < lines.index("[test] testing")
    assert any(line.split() == ["build", "build", "success", line.split()[-1]] for line in lines)
    assert any(line.split()[:3] == ["test", "test", "failed"] for line in lines)
    assert lines[-1].startswith("pipeline #1: failed; logs in ")

    only = subprocess.run(
        [sys.executable, str(EXAMPLES / "run_pipeline.py"), str(repo), "--job", "build", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env_home,
    )
    assert only.returncode == 0, only.stderr
    assert not any(line.startswith("[") for line in only.stdout.splitlines())
    assert only.stdout.splitlines()[-1].startswith("pipeline #2: success")


def test_deploy_with_wait(fake_kube: FakeKube, tmp_path: Path) -> None:
    from test_deploy import deployment

    manifest = tmp_path / "web.yaml"
    manifest.write_text(deployment("web", "echo up; exec sleep 300"))
    out = run(
        "deploy_with_wait.py", str(manifest), "--image", "app=registry.example.com/web:7",
        "--kubeconfig", str(fake_kube.kubeconfig), "--timeout", "60", cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("deployment/web") and "created" in line for line in lines), lines
    assert lines[-1] == "deployed 1 object(s)"
    assert any(line.startswith("deployment/web in default: ") for line in lines), lines

    manifest.write_text(deployment("web", "echo broken config >&2; exit 2"))
    failed = run(
        "deploy_with_wait.py", str(manifest), "--image", "app=registry.example.com/web:8",
        "--kubeconfig", str(fake_kube.kubeconfig), "--timeout", "60", cwd=tmp_path,
    )
    assert failed.returncode == 1, failed.stdout
    assert failed.stderr.startswith("deploy failed (rollout_failed): ")
    assert "broken config" in failed.stderr
