"""The CRDs' short names collide with no built-in kind and no widely installed CRD.

A short name two resources share makes ``kubectl get ds`` ambiguous: kubectl picks one
(the built-in wins), so a user asking for Datasets silently gets DaemonSets. Capsule,
the usual multi-tenancy operator beside which regsandbox runs, names its Tenant
``tenants``/``tnt``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sandbox.api.resources import RESOURCES


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


BUILT_IN = _names(
    # kubectl api-resources on Kubernetes 1.34: short names, then names that users type.
    """cs cm ep eps ev limits ns no pvc pv po rc quota sa svc crd crds ds deploy rs sts hpa cj
    csr ing ingclass netpol pdb pc sc ipa vac rtc psp all events pods nodes jobs roles leases
    secrets services namespaces deployments daemonsets statefulsets replicasets configmaps
    endpoints tenants datasets"""
)
"""Built-in short names and names (``ds`` is DaemonSet's)."""

WELL_KNOWN = _names(
    """tnt tenant tenants tntres gtr tr
    cert certs cr crs ciss iss order chal
    cpol pol polr cpolr ur polex cleanpol ccleanpol
    constraint ct cfg
    smon pmon prb promrule prom am amcfg scfg
    app apps appproj appprojs appset appsets
    ks hr gitrepo helmrepo hc ocirepo
    vs gw dr se pa ra ap sidecar
    lhv lhe lhr lhn lhs lhbi lhbt lhbv lhb lhsm lhrj
    ksvc kcfg rt rev vm vms vmi vmis backup restore vsc vsclass"""
)
"""Short names of CRDs commonly installed beside regsandbox, one project a line: Capsule,
cert-manager, Kyverno, Gatekeeper, Prometheus operator, Argo CD, Flux, Istio, Longhorn
(the default storage profile), then Knative, KubeVirt, Velero and volume snapshots."""


def test_short_names_collide_with_nothing_well_known() -> None:
    for res in RESOURCES:
        clashes = set(res.short_names) & (BUILT_IN | WELL_KNOWN)
        assert not clashes, f"{res.kind}: {sorted(clashes)}"


def test_short_names_are_distinct_and_long_names_stay(repo_root: Path) -> None:
    shorts = [s for res in RESOURCES for s in res.short_names]
    assert len(shorts) == len(set(shorts))
    for res in RESOURCES:
        assert res.short_names, f"{res.kind} has no short name"
        crd = yaml.safe_load(
            (repo_root / f"charts/regsandbox/crds/{res.plural}.regsandbox.io.yaml").read_text()
        )
        names = crd["spec"]["names"]
        assert names["plural"] == res.plural
        assert names["kind"] == res.kind
        assert names["shortNames"] == list(res.short_names)  # the chart is regenerated
