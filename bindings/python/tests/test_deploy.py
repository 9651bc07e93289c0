"""podci.deploy against the fake Kubernetes API server (tests/fake-kube: apps/v1,
server-side apply, workload controllers, a kubelet running containers as processes):
images by container name, waiting for rollouts, dry runs, failures with the failing
Pods' logs, and errors before any request."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import FakeKube

import podci


def deployment(name: str, command: str, replicas: int = 2) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: placeholder
        command: ["sh", "-c", {json.dumps(command)}]
      - name: sidecar
        image: busybox:1.36
        command: ["sleep", "300"]
"""


CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  mode: production\n"


def get(fake: FakeKube, path: str) -> dict[str, Any]:
    """An object read back from the fake API server with the kubeconfig's token."""
    config = yaml.safe_load(fake.kubeconfig.read_text())
    token = config["users"][0]["user"]["token"]
    req = urllib.request.Request(fake.url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        obj: dict[str, Any] = json.load(r)
        return obj


def images_of(d: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["image"] for c in d["spec"]["template"]["spec"]["containers"]}


def manifests(tmp_path: Path, web_command: str = "echo serving; exec sleep 300") -> Path:
    k8s = tmp_path / "k8s"
    k8s.mkdir(exist_ok=True)
    (k8s / "10-config.yaml").write_text(CONFIGMAP)
    (k8s / "20-web.yaml").write_text(deployment("web", web_command))
    return k8s


def test_deploy_sets_images_applies_and_waits(fake_kube: FakeKube, tmp_path: Path) -> None:
    k8s = manifests(tmp_path)
    lines: list[str] = []
    result = podci.deploy(
        k8s,
        images={"app": "registry.example.com/web:2.0"},
        kubeconfig=fake_kube.kubeconfig,
        timeout=60,
        on_progress=lines.append,
    )
    assert not result.dry_run and result.cluster
    assert [(o.kind, o.name, o.namespace, o.action) for o in result.objects] == [
        ("ConfigMap", "web-config", "default", "created"),
        ("Deployment", "web", "default", "created"),
    ]
    assert str(result.objects[1]) == result.objects[1].text and "deployment/web" in result.objects[1].text
    ((rollout),) = result.rollouts
    assert (rollout.kind, rollout.name, rollout.namespace, rollout.done) == ("Deployment", "web", "default", True)
    assert any("rolled out" in line for line in lines) and any("deployment/web" in line for line in lines)

    live = get(fake_kube, "/apis/apps/v1/namespaces/default/deployments/web")
    assert images_of(live) == {"app": "registry.example.com/web:2.0", "sidecar": "busybox:1.36"}
    assert live["status"]["readyReplicas"] == 2
    assert get(fake_kube, "/api/v1/namespaces/default/configmaps/web-config")["data"] == {"mode": "production"}

    again = podci.deploy(k8s, images=["app=registry.example.com/web:2.0"], kubeconfig=fake_kube.kubeconfig)
    assert [o.action for o in again.objects] == ["unchanged", "unchanged"]


def test_dry_run_diffs_against_the_live_objects_and_changes_nothing(fake_kube: FakeKube, tmp_path: Path) -> None:
    k8s = manifests(tmp_path)
    podci.deploy(k8s, images={"app": "registry.example.com/web:1"}, kubeconfig=fake_kube.kubeconfig)
    dry = podci.deploy(
        k8s, images={"app": "registry.example.com/web:2"}, kubeconfig=fake_kube.kubeconfig, dry_run=True
    )
    assert dry.dry_run and dry.cluster and dry.rollouts == []
    assert [(o.name, o.action) for o in dry.objects] == [("web-config", "unchanged"), ("web", "configured")]
    removed = [line for line in dry.diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line for line in dry.diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert any("registry.example.com/web:1" in line for line in removed), dry.diff
    assert any("registry.example.com/web:2" in line for line in added), dry.diff
    assert "registry.example.com/web:2" in dry.rendered
    live = get(fake_kube, "/apis/apps/v1/namespaces/default/deployments/web")
    assert images_of(live)["app"] == "registry.example.com/web:1"


def test_a_crashing_rollout_raises_with_the_pods_logs(fake_kube: FakeKube, tmp_path: Path) -> None:
    k8s = manifests(tmp_path, web_command="echo cannot connect to database >&2; exit 3")
    with pytest.raises(podci.KubernetesError) as e:
        podci.deploy(k8s, images={"app": "registry.example.com/web:2.0"}, kubeconfig=fake_kube.kubeconfig, timeout=60)
    err = e.value
    assert err.kind == "rollout_failed", err
    assert (err.name, err.namespace) == ("deployment/web", "default")
    assert err.pods, err
    logs = [line for pod in err.pods for line in pod["logs"].get("app", [])]
    assert "cannot connect to database" in logs
    assert "cannot connect to database" in str(err)


def test_errors_before_any_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    k8s = manifests(tmp_path)
    with pytest.raises(podci.KubernetesError) as unmatched:
        podci.deploy(k8s, images={"ap": "registry.example.com/web:2"}, dry_run=True)
    assert unmatched.value.kind == "image_unmatched"
    assert "no container or init container named \"ap\"" in str(unmatched.value)
    with pytest.raises(ValueError, match="NAME=IMAGE"):
        podci.deploy(k8s, images=["just-an-image"])
    with pytest.raises(podci.KubernetesError) as missing:
        podci.deploy(tmp_path / "nope.yaml", dry_run=True)
    assert missing.value.kind == "read"
    (tmp_path / "bad.yaml").write_text("kind: [\n")
    with pytest.raises(podci.KubernetesError) as bad:
        podci.deploy(tmp_path / "bad.yaml", dry_run=True)
    assert bad.value.kind == "parse" and "bad.yaml" in str(bad.value)
    (tmp_path / "kc").write_text("not a kubeconfig: [")
    with pytest.raises(podci.KubernetesError) as kc:
        podci.deploy(k8s, kubeconfig=tmp_path / "kc")
    assert kc.value.kind == "kubeconfig"
    with pytest.raises(ValueError, match="timeout"):
        podci.deploy(k8s, timeout=0)


def test_dry_run_without_a_cluster_renders_the_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = podci.deploy(manifests(tmp_path), images={"app": "registry.example.com/web:3"}, dry_run=True)
    assert result.dry_run and not result.cluster and result.objects == []
    docs = list(yaml.safe_load_all(result.rendered))
    assert [d["kind"] for d in docs if d] == ["ConfigMap", "Deployment"]
    web = [d for d in docs if d and d["kind"] == "Deployment"][0]
    assert images_of(web)["app"] == "registry.example.com/web:3"


def test_deploy_async_runs_deploys_together(fake_kube: FakeKube, tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text(deployment("api", "exec sleep 300", replicas=1))
    b = tmp_path / "b.yaml"
    b.write_text(deployment("worker", "exec sleep 300", replicas=1))

    async def main() -> list[podci.DeployResult]:
        return list(await asyncio.gather(
            podci.deploy_async(a, images={"app": "registry.example.com/api:1"}, kubeconfig=fake_kube.kubeconfig),
            podci.deploy_async(b, images={"app": "registry.example.com/worker:1"}, kubeconfig=fake_kube.kubeconfig),
        ))

    ra, rb = asyncio.run(main())
    assert [r.rollouts[0].name for r in (ra, rb)] == ["api", "worker"]
    assert all(r.rollouts[0].done for r in (ra, rb))
