"""Read a Prometheus text exposition the way a scraper does (prometheus_client's parser)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "scrape"]


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample with its labels."""

    text: str
    samples: tuple[tuple[str, dict[str, str], float], ...]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(
            v
            for n, have, v in self.samples
            if n == name and all(have.get(k) == want for k, want in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        """Whether any sample named ``name`` carries ``labels``."""
        return any(
            n == name and all(have.get(k) == want for k, want in labels.items())
            for n, have, _ in self.samples
        )

    def label_values(self, prefix: str) -> set[str]:
        """Every label value of the samples whose name starts with ``prefix``."""
        return {v for n, have, _ in self.samples if n.startswith(prefix) for v in have.values()}


def scrape(url: str) -> Scrape:
    """Fetch and parse ``url`` (a ``/metrics`` endpoint); raise if it does not answer 200."""
    answer = httpx.get(url, timeout=10)
    answer.raise_for_status()
    samples = tuple(
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    )
    return Scrape(answer.text, samples)
