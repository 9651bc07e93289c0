"""podci.image against Debian's docker-registry: append-layer builds pushed for real, read
back with plain HTTP (not through podci), inspected, copied between registries, OCI
layouts and docker archives, with the credential sources the CLI uses."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import podci
from podci import image

from conftest import Registry

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def fetch(url: str, accept: str | None = None, auth: tuple[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        body: bytes = resp.read()
        return body


def manifest(host: str, repo: str, ref: str, auth: tuple[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    body = fetch(f"http://{host}/v2/{repo}/manifests/{ref}", MANIFEST_TYPES, auth)
    return "sha256:" + hashlib.sha256(body).hexdigest(), json.loads(body)


def blob(host: str, repo: str, digest: str) -> bytes:
    data = fetch(f"http://{host}/v2/{repo}/blobs/{digest}")
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def layer_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return {m.name.lstrip("./"): m for m in tar.getmembers()}


@pytest.fixture()
def app_tree(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "bin").mkdir(parents=True)
    hello = root / "bin" / "hello"
    hello.write_text("#!/bin/sh\necho hello from podci\n")
    hello.chmod(0o755)
    (root / "data.txt").write_text("payload\n" * 1000)
    return root


def build(registry: Registry, app_tree: Path, tmp_path: Path, tag: str, **kwargs: Any) -> image.WriteReport:
    conf = tmp_path / "app.conf"
    conf.write_text("mode=prod\n")
    return image.append(
        None,
        [app_tree, (conf, "/etc/app.conf")],
        f"{registry.host}/team/app:{tag}",
        entrypoint=["/bin/hello"],
        env={"MODE": "prod"},
        labels={"org.opencontainers.image.title": "app"},
        expose=[8080],
        workdir="/srv",
        **kwargs,
    )


def test_append_pushes_an_image_that_reads_back(
    registry: Registry, app_tree: Path, tmp_path: Path, isolated_credentials: Path
) -> None:
    rep = build(registry, app_tree, tmp_path, "1.0", extra_tags=["latest"])
    assert rep.reference == f"{registry.host}/team/app:1.0"
    assert rep.blobs_uploaded == 3 and rep.blobs_existing == 0  # two layers and the config
    digest, m = manifest(registry.host, "team/app", "1.0")
    assert rep.digest == digest
    assert manifest(registry.host, "team/app", "latest")[0] == digest
    assert len(m["layers"]) == 2

    first = layer_members(blob(registry.host, "team/app", m["layers"][0]["digest"]))
    assert first["bin/hello"].mode & 0o777 == 0o755
    assert first["bin/hello"].mtime == 0  # reproducible: $SOURCE_DATE_EPOCH or 0
    assert first["data.txt"].size == 8000
    second = layer_members(blob(registry.host, "team/app", m["layers"][1]["digest"]))
    assert second["etc/app.conf"].size == len("mode=prod\n")

    config = json.loads(blob(registry.host, "team/app", m["config"]["digest"]))["config"]
    assert "MODE=prod" in config["Env"]
    assert config["Entrypoint"] == ["/bin/hello"]
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["WorkingDir"] == "/srv"
    assert config["Labels"] == {"org.opencontainers.image.title": "app"}

    again = build(registry, app_tree, tmp_path, "1.0-again")
    assert again.digest == rep.digest  # same inputs, same image
    assert (again.blobs_uploaded, again.blobs_existing) == (0, 3)


def test_append_on_a_base_and_inspect(
    registry: Registry, app_tree: Path, tmp_path: Path, isolated_credentials: Path
) -> None:
    base = build(registry, app_tree, tmp_path, "base")
    extra = tmp_path / "VERSION"
    extra.write_text("2.0\n")
    rep = image.append(
        f"{registry.host}/team/app:base",
        extra,
        f"{registry.host}/team/app:2.0",
        env={"VERSION": "2.0"},
        cmd="echo started",
    )
    assert rep.blobs_existing == 2 and rep.blobs_uploaded == 2  # new layer + config
    info = image.inspect(f"{registry.host}/team/app:2.0")
    assert info["digest"] == rep.digest == manifest(registry.host, "team/app", "2.0")[0]
    assert info["reference"] == f"{registry.host}/team/app:2.0"
    assert len(info["layers"]) == 3
    assert info["layers"][2]["mediaType"].endswith("tar+gzip") or "gzip" in info["layers"][2]["mediaType"]
    assert {"MODE=prod", "VERSION=2.0"} <= set(info["config"]["Env"])
    assert info["config"]["Entrypoint"] == ["/bin/hello"]
    assert info["config"]["Cmd"] == ["/bin/sh", "-c", "echo started"]
    assert info["platform"].startswith("linux/")
    assert image.inspect(f"{registry.host}/team/app:base")["digest"] == base.digest


def test_copy_between_registries_layouts_and_archives(
    registry: Registry, app_tree: Path, tmp_path: Path, isolated_credentials: Path
) -> None:
    src = build(registry, app_tree, tmp_path, "copy-src")
    layout = tmp_path / "layout"
    to_layout = image.copy(f"{registry.host}/team/app:copy-src", f"oci:{layout}:v1")
    assert to_layout.digest == src.digest
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == src.digest
    assert (layout / "oci-layout").exists()

    back = image.copy(f"oci:{layout}:v1", f"{registry.host}/mirror/app:v1", extra_tags=["stable"])
    assert back.digest == src.digest and back.blobs_uploaded == 3
    assert manifest(registry.host, "mirror/app", "stable")[0] == src.digest

    archive = tmp_path / "app.tar"
    image.copy(f"{registry.host}/team/app:copy-src", f"docker-archive:{archive}:app:v1")
    with tarfile.open(archive) as tar:
        saved = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert saved[0]["RepoTags"] == ["app:v1"]
    assert len(saved[0]["Layers"]) == 2


def test_copy_async_runs_copies_together(
    registry: Registry, app_tree: Path, tmp_path: Path, isolated_credentials: Path
) -> None:
    src = build(registry, app_tree, tmp_path, "async-src")

    async def main() -> list[image.WriteReport]:
        return await asyncio.gather(
            *(
                image.copy_async(f"{registry.host}/team/app:async-src", f"{registry.host}/async{i}/app:v1")
                for i in range(3)
            )
        )

    reports = asyncio.run(main())
    assert [r.digest for r in reports] == [src.digest] * 3
    assert [r.reference for r in reports] == [f"{registry.host}/async{i}/app:v1" for i in range(3)]
    info = asyncio.run(image.inspect_async(f"{registry.host}/async2/app:v1"))
    assert info["digest"] == src.digest
    appended = asyncio.run(
        image.append_async(None, app_tree, f"{registry.host}/async-append/app:v1", mtime=1_700_000_000)
    )
    assert appended.digest != src.digest and appended.blobs_uploaded == 2


def test_credentials_as_in_the_cli(
    auth_registry: Registry, app_tree: Path, isolated_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert auth_registry.username and auth_registry.password
    host = auth_registry.host
    user, password = auth_registry.username, auth_registry.password

    with pytest.raises(podci.RegistryError) as anonymous:
        image.append(None, app_tree, f"{host}/private/app:v1")
    assert anonymous.value.status == 401 or anonymous.value.kind == "auth"

    wrong = "not-the-Pa55word-xyz"
    with pytest.raises(podci.RegistryError) as denied:
        image.append(None, app_tree, f"{host}/private/app:v1", username=user, password=wrong)
    e = denied.value
    assert e.kind in ("auth", "registry")
    for text in (str(e), repr(e), repr(e.args), repr(vars(e))):
        assert wrong not in text

    explicit = image.append(None, app_tree, f"{host}/private/app:v1", username=user, password=password)
    assert explicit.blobs_uploaded == 2
    digest, _ = manifest(host, "private/app", "v1", auth=(user, password))
    assert explicit.digest == digest

    # Docker's config.json, as `docker login` / `podci image login` leave it.
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (isolated_credentials / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))
    assert image.inspect(f"{host}/private/app:v1")["digest"] == digest
    (isolated_credentials / "config.json").unlink()

    # Inside a GitLab job: CI_REGISTRY, CI_REGISTRY_USER, CI_REGISTRY_PASSWORD.
    monkeypatch.setenv("CI_REGISTRY", host)
    monkeypatch.setenv("CI_REGISTRY_USER", user)
    monkeypatch.setenv("CI_REGISTRY_PASSWORD", password)
    copied = image.copy(f"{host}/private/app:v1", f"{host}/private/copy:v1")
    # Same registry: the layer is mounted from private/app, not sent again.
    assert copied.digest == digest and copied.blobs_mounted >= 1
    assert copied.blobs_mounted + copied.blobs_existing + copied.blobs_uploaded == 2


def test_registry_errors_carry_structured_fields(registry: Registry, tmp_path: Path, isolated_credentials: Path) -> None:
    with pytest.raises(podci.RegistryError) as missing:
        image.inspect(f"{registry.host}/team/none:nope")
    assert missing.value.status == 404
    assert missing.value.registry == registry.host
    assert "MANIFEST_UNKNOWN" in missing.value.codes or "NAME_UNKNOWN" in missing.value.codes

    with pytest.raises(podci.RegistryError) as bad_ref:
        image.inspect("Not A Reference!")
    assert bad_ref.value.kind == "invalid_reference"

    with pytest.raises(podci.RegistryError) as io_error:
        image.append(None, tmp_path / "does-not-exist", f"{registry.host}/team/x:1")
    assert io_error.value.kind == "io"
    assert io_error.value.path is not None and "does-not-exist" in io_error.value.path

    with pytest.raises(podci.RegistryError) as half:
        image.inspect(f"{registry.host}/team/none:nope", username="someone")
    assert half.value.kind == "credentials"

    with pytest.raises(ValueError, match="absolute"):
        image.append(None, [(tmp_path, "relative/dir")], f"{registry.host}/team/x:1")
    assert isinstance(missing.value, podci.Error)


class _NotFound(BaseHTTPRequestHandler):
    """A registry that knows no images, served by Python code in this process."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path in ("/v2/", "/v2"):
            body, status = b"{}", 200
        else:
            body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode()
            status = 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_calls_release_the_gil(isolated_credentials: Path) -> None:
    # The server below is Python code in this process: it can only answer while the
    # registry call runs if that call released the GIL. Holding it would end in a
    # timeout or connection error, never in this 404.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(podci.RegistryError) as info:
            image.inspect(f"{host}/in-process/app:v1")
        assert info.value.status == 404
        assert info.value.codes == ["MANIFEST_UNKNOWN"]
    finally:
        server.shutdown()
        server.server_close()


def test_source_date_epoch_sets_layer_times(
    registry: Registry, app_tree: Path, monkeypatch: pytest.MonkeyPatch, isolated_credentials: Path
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    rep = image.append(None, app_tree, f"{registry.host}/team/epoch:v1")
    _, m = manifest(registry.host, "team/epoch", "v1")
    members = layer_members(blob(registry.host, "team/epoch", m["layers"][0]["digest"]))
    assert members["bin/hello"].mtime == 1_700_000_000
    assert rep.digest is not None


INTERRUPT_CHILD = """
import os, signal, socket, sys, threading
from podci import image
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(16)  # never accepts: the request waits for an answer that never comes
threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    image.inspect(f"127.0.0.1:{server.getsockname()[1]}/hang/app:v1")
except KeyboardInterrupt:
    print("interrupted")
    sys.exit(0)
print("returned")
sys.exit(1)
"""


def test_ctrl_c_interrupts_a_hanging_call(isolated_credentials: Path) -> None:
    # In a child process, so that the SIGINT cannot disturb pytest itself.
    out = subprocess.run(
        [sys.executable, "-c", INTERRUPT_CHILD], capture_output=True, text=True, timeout=120
    )
    assert (out.returncode, out.stdout.strip()) == (0, "interrupted"), out.stderr
