"""Fixtures of the metrics tests: the HA tests' operator replicas and Lease helpers."""

from tests.ha.conftest import audit_log, cluster_to_ourselves, ha_kubeconfig

__all__ = ["audit_log", "cluster_to_ourselves", "ha_kubeconfig"]
