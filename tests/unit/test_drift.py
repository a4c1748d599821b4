"""Drift detection compares only what the operator sets."""

from __future__ import annotations

from sandbox.lifecycle.drift import holds


def test_defaults_added_by_the_server_are_not_drift() -> None:
    desired = {"metadata": {"name": "w", "labels": {"a": "1"}}, "spec": {"size": "10Gi"}}
    live = {
        "metadata": {"name": "w", "labels": {"a": "1", "k": "v"}, "finalizers": ["x"]},
        "spec": {"size": "10Gi", "volumeMode": "Filesystem"},
        "status": {"phase": "Pending"},
    }
    assert holds(desired, live)


def test_changed_missing_or_extra_list_items_are_drift() -> None:
    desired = {"spec": {"hard": {"cpu": "2"}, "rules": [{"a": 1}, {"b": 2}]}}
    assert not holds(desired, {"spec": {"hard": {"cpu": "64"}, "rules": [{"a": 1}, {"b": 2}]}})
    assert not holds(desired, {"spec": {"hard": {}, "rules": [{"a": 1}, {"b": 2}]}})
    assert not holds(desired, {"spec": {"hard": {"cpu": "2"}, "rules": [{"a": 1}]}})
    extra = {"spec": {"hard": {"cpu": "2"}, "rules": [{"a": 1}, {"b": 2}, {"c": 3}]}}
    assert not holds(desired, extra)
