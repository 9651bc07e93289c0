"""Shared fixtures: the installed podci package (never the source tree), and real
registries (Debian's docker-registry) started on free loopback ports and stopped after
the session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import podci

HERE = Path(__file__).resolve().parent
SOURCE_PACKAGE = HERE.parent / "python" / "podci"
IN_CI = os.environ.get("CI", "") not in ("", "false", "0")


def pytest_configure(config: pytest.Config) -> None:
    installed = Path(podci.__file__).resolve().parent
    if installed == SOURCE_PACKAGE.resolve():
        raise pytest.UsageError(
            f"podci was imported from the source tree ({installed}); run the suite against the "
            "installed wheel (cargo test -p podci-python does)"
        )


def require(program: str) -> str:
    """The path of ``program``; fails under CI when it is missing, skips loudly elsewhere."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed (see .ci/setup.d/40-registry.sh and 60-python.sh)"
        if IN_CI:
            pytest.fail(message)
        print(f"\n!!!!! SKIPPING: {message} !!!!!", file=sys.stderr)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not listen on {port} within 20 s")


@dataclass
class Registry:
    host: str
    username: str | None = None
    password: str | None = None


def start_registry(workdir: Path, htpasswd: Path | None) -> tuple[subprocess.Popen[bytes], str]:
    binary = require("docker-registry")
    port = free_port()
    auth = ""
    if htpasswd is not None:
        auth = f"auth:\n  htpasswd:\n    realm: podci-test\n    path: {htpasswd}\n"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    log = workdir / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_port(port, proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """An anonymous registry."""
    with tempfile.TemporaryDirectory(prefix="podci-registry-") as d:
        proc, host = start_registry(Path(d), None)
        try:
            yield Registry(host)
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[Registry]:
    """A registry with htpasswd (Basic) authentication for one user."""
    htpasswd_bin = require("htpasswd")
    user, password = "ci-user", "s3cret-Pa55word"
    with tempfile.TemporaryDirectory(prefix="podci-registry-auth-") as d:
        path = Path(d) / "htpasswd"
        out = subprocess.run(
            [htpasswd_bin, "-Bin", user], input=password.encode(), capture_output=True, check=True
        )
        path.write_bytes(out.stdout)
        proc, host = start_registry(Path(d), path)
        try:
            yield Registry(host, user, password)
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture()
def isolated_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Docker config directory, so stored logins of the machine do not leak in."""
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(config / "auth.json"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("XDG_RUNTIME_DIR", "DOCKER_AUTH_CONFIG", "CI_REGISTRY", "CI_REGISTRY_USER", "CI_REGISTRY_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    return config


@dataclass
class FakeKube:
    url: str
    kubeconfig: Path


def fake_kube_binary() -> str:
    """tests/fake-kube's binary: ``$PODCI_FAKE_KUBE`` (wheel.rs builds it and sets it), else
    ``fake-kube`` on PATH."""
    path = os.environ.get("PODCI_FAKE_KUBE") or shutil.which("fake-kube")
    if not path or not os.access(path, os.X_OK):
        message = "the fake Kubernetes API server is not built (cargo build -p podci-fake-kube; wheel.rs does)"
        if IN_CI:
            pytest.fail(message)
        print(f"\n!!!!! SKIPPING: {message} !!!!!", file=sys.stderr)
        pytest.skip(message)
    return path


@pytest.fixture()
def fake_kube(tmp_path: Path) -> Iterator[FakeKube]:
    """A fresh fake API server (apps/v1 with workload controllers, a fake kubelet running
    containers as local processes) on a free loopback port, with a kubeconfig for it.
    Stopping it kills its Pods' processes."""
    kubeconfig = tmp_path / "kubeconfig"
    log = tmp_path / "fake-kube.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [fake_kube_binary(), "--kubeconfig", str(kubeconfig)], stdout=subprocess.PIPE, stderr=err
        )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        if not first.startswith("fake-kube serving at "):
            raise RuntimeError(f"fake-kube did not start: {first!r} {log.read_text(errors='replace')}")
        deadline = time.monotonic() + 20
        while not kubeconfig.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield FakeKube(first.removeprefix("fake-kube serving at ").strip(), kubeconfig)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
