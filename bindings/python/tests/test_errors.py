"""The exception hierarchy and its structured fields."""

from __future__ import annotations

import pickle

import pytest

import podci


def test_hierarchy() -> None:
    for cls in (podci.PipelineError, podci.RegistryError, podci.KubernetesError):
        assert issubclass(cls, podci.Error)
    assert issubclass(podci.Error, Exception)
    assert not issubclass(podci.RegistryError, podci.PipelineError)


def test_fields_survive_pickling() -> None:
    # Errors cross process boundaries (multiprocessing, concurrent.futures) intact.
    e = podci.RegistryError("refused", kind="registry", registry="r:5000", status=403, codes=["DENIED"])
    back = pickle.loads(pickle.dumps(e))
    assert (back.message, back.kind, back.registry, back.status, back.codes) == (
        "refused", "registry", "r:5000", 403, ["DENIED"],
    )
    p = podci.load("a: {stage: nope, script: x}\n")
    with pytest.raises(podci.PipelineError) as info:
        p.raise_for_errors()
    back_p = pickle.loads(pickle.dumps(info.value))
    assert back_p.message == info.value.message
    assert [d.message for d in back_p.diagnostics] == [d.message for d in p.errors]


def test_kubernetes_error_fields() -> None:
    e = podci.KubernetesError("pods \"x\" not found", kind="api", namespace="ci", name="x", status=404, reason="NotFound")
    assert (e.namespace, e.name, e.status, e.reason) == ("ci", "x", 404, "NotFound")
    assert str(e) == 'pods "x" not found'
