"""Policy inputs for tests: a compliant baseline and a seeded random generator."""

from __future__ import annotations

import random
from typing import Any

from sandbox.policy import ACTIONS, PolicyInput

LU = "onprem:lu-national-1"

REGIONS = [
    LU,
    "onprem:lu-national-2",
    "aws:eu-central-1",
    "aws:eu-central-2",
    "aws:us-east-1",
    "aws:ca-central-1",
    "azure:westeurope",
    "azure:norwayeast",
    "azure:uksouth",
    "gcp:europe-west3",
    "gcp:asia-northeast1",
    "ovhcloud:gra",
    "scaleway:fr-par",
    "unknown:region",
    "",
]
SECTORS = ["finance", "health", "public", "research", "space", "manufacturing", "other"]
JURISDICTIONS = ["LU", "DE", "FR", "CH", "US", "NO"]
PERSONAL = ["none", "anonymised", "pseudonymised", "personal", "special-category"]
PURPOSES = ["fraud", "sepsis", "triage", "marketing", ""]
AREAS = ["public-administration", "energy", "marketing", ""]
TIMES = ["2026-01-01T00:00:00Z", "2030-06-30T12:00:00Z", "2035-12-31T23:59:59Z"]
NOW = "2026-12-06T00:00:00Z"
IDENTIFIABILITY = ["anonymous", "pseudonymised", "identified", "unknown"]
CATEGORIES = ["ordinary", "special-category", "criminal-offence", "unknown"]
TRANSFERS = [
    None,
    {"mechanism": "scc", "reference": "SCC-1", "recipient": "R Inc."},
    {"mechanism": "dpf", "reference": "DPF-1", "recipient": "R Inc.", "certified": True},
    {"mechanism": "dpf", "reference": "DPF-1", "recipient": "R Inc.", "certified": False},
    {"mechanism": "bcr", "reference": " ", "recipient": ""},
]
MEMBERS = [
    {"user": "alice", "role": "owner"},
    {"group": "analysts", "role": "member"},
    {"user": "bob", "role": "reviewer"},
]


def baseline(action: str = "sandbox.provision") -> dict[str, Any]:
    """A compliant finance provisioning input (as the JSON engines receive)."""
    return {
        "action": action,
        "now": NOW,
        "cluster": {
            "region": LU,
            "jurisdiction": "LU",
            "keys": {"provider": "local", "region": LU, "perSandbox": True},
            "audit": {"retentionDays": 1826},
        },
        "tenant": {
            "name": "lux-bank",
            "sector": "finance",
            "jurisdiction": "LU",
            "attestations": {"supervisoryAuthority": "CSSF"},
        },
        "datasets": [
            {
                "name": "tx",
                "sector": "finance",
                "jurisdiction": "LU",
                "location": {"bucket": "b", "region": LU},
                "identifiability": "pseudonymised",
                "category": "ordinary",
                "allowedPurposes": ["fraud"],
                "ictThirdParty": {"registerReference": "ROI-1", "dataLocations": ["LU"]},
            }
        ],
        "sandbox": {
            "name": "s1",
            "purpose": "fraud",
            "region": LU,
            "lifetime": {"ttl": "720h", "seconds": 2592000},
            "datasets": [{"name": "tx", "purpose": "fraud"}],
        },
    }


def random_input(rng: random.Random) -> dict[str, Any]:
    """A random but well-typed input, validated through :class:`PolicyInput`."""
    sector = rng.choice(SECTORS)
    attestations: dict[str, Any] = {}
    for key in ("supervisoryAuthority", "dpiaReference", "ethicsApproval"):
        if rng.random() < 0.6:
            attestations[key] = rng.choice(["CSSF", "ref-1", ""])
    names = [f"d{i}" for i in range(rng.randint(0, 3))]
    if rng.random() < 0.5:
        attestations["dataPermit"] = {
            "id": "P-1",
            "datasets": rng.sample(names, rng.randint(0, len(names))),
            "users": rng.sample(["alice", "carol"], rng.randint(0, 2)),
            "groups": rng.sample(["analysts"], rng.randint(0, 1)),
            "purposes": rng.sample(PURPOSES[:-1], rng.randint(0, 2)),
            "validUntil": rng.choice(TIMES),
        }
        if rng.random() < 0.3:
            attestations["dataPermit"]["validFrom"] = rng.choice(TIMES)
    if rng.random() < 0.3:
        attestations["specialCategoryBasis"] = {
            "condition": rng.choice(["9(2)(j)", "9(2)(k)"]),
            "reference": rng.choice(["law", " "]),
        }
    if rng.random() < 0.3:
        attestations["criminalOffenceAuthorisation"] = rng.choice(["law", ""])
    if rng.random() < 0.3:
        attestations["transfers"] = [
            {"mechanism": "scc", "reference": "SCC-1", "recipient": "R Inc.", "country": "US"}
        ]
    datasets = []
    for name in names:
        if rng.random() >= 0.85:
            continue
        dataset: dict[str, Any] = {
            "name": name,
            "sector": rng.choice(SECTORS),
            "jurisdiction": rng.choice(JURISDICTIONS),
            "location": {"bucket": "b", "region": rng.choice(REGIONS)},
            "allowedPurposes": rng.sample(PURPOSES[:-1], rng.randint(0, 3)),
        }
        if rng.random() < 0.3:
            dataset["personalData"] = rng.choice(PERSONAL)  # the deprecated class alone
        else:
            dataset["identifiability"] = rng.choice(IDENTIFIABILITY)
            dataset["category"] = rng.choice(CATEGORIES)
        transfer = rng.choice(TRANSFERS)
        if transfer is not None:
            dataset["transfer"] = transfer
        if rng.random() < 0.6:
            dataset["ictThirdParty"] = {
                "registerReference": rng.choice(["ROI-1", " "]),
                "dataLocations": rng.sample(["LU", "DE", LU, "aws:us-east-1"], rng.randint(0, 2)),
            }
        datasets.append(dataset)
    lifetime: dict[str, Any] = {"onExpiry": rng.choice(["delete", "delete", "retain"])}
    if rng.random() < 0.8:
        lifetime["expiresAt"] = rng.choice(TIMES)
        lifetime["seconds"] = rng.choice([3600, 86400 * 365, 86400 * 800])
    sandbox: dict[str, Any] = {
        "name": "sbx",
        "purpose": rng.choice(PURPOSES),
        "region": rng.choice(REGIONS),
        "lifetime": lifetime,
        "datasets": [
            {"name": name, "purpose": rng.choice(PURPOSES)}
            for name in names + (["ghost"] if rng.random() < 0.2 else [])
        ],
        "egress": [
            {
                "cidr": f"198.51.100.{i}/32",
                "ports": [443],
                "region": rng.choice(REGIONS),
                **({"transfer": t} if (t := rng.choice(TRANSFERS)) else {}),
            }
            for i in range(rng.randint(0, 2))
        ],
    }
    if rng.random() < 0.6:
        sandbox["publicInterest"] = {
            "area": rng.choice(AREAS),
            "whyNotAnonymised": rng.choice(["", " ", "records must be linked"]),
            "monitoring": rng.choice(["", "weekly review"]),
            "deletion": rng.choice(["", "deleted at the end"]),
        }
    document: dict[str, Any] = {
        "action": rng.choice([*ACTIONS, "sandbox.delete"]),
        "now": rng.choice([NOW, *TIMES]),
        "cluster": {
            "region": rng.choice(REGIONS),
            "jurisdiction": rng.choice(JURISDICTIONS),
            "keys": {"region": rng.choice(REGIONS), "perSandbox": rng.random() < 0.8},
            "audit": {"retentionDays": rng.choice([0, 364, 365, 1825, 1826, 3650])},
        },
        "tenant": {
            "name": "t",
            "sector": sector,
            "jurisdiction": rng.choice(JURISDICTIONS),
            "members": rng.sample(MEMBERS, rng.randint(0, 3)),
            "attestations": attestations,
        },
        "datasets": datasets,
        "sandbox": sandbox,
    }
    if document["action"] == "model.export" or rng.random() < 0.2:
        export: dict[str, Any] = {
            "name": "e1",
            "sandbox": "sbx",
            "artifact": {"path": "outbox/m", "kind": rng.choice(["model", "aggregate", "dataset"])},
            "destination": {"region": rng.choice(REGIONS)},
            "justification": rng.choice(["deploy", " ", ""]),
            "requester": "alice",
        }
        if rng.random() < 0.3:
            export["anonymity"] = {"assessmentReference": rng.choice(["ANON-1", " "])}
        if rng.random() < 0.7:
            export["approvals"] = rng.sample(["alice", "bob", "carol"], rng.randint(0, 3))
        document["export"] = export
    return PolicyInput.model_validate(document).to_rego()
