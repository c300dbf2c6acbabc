"""How many examples each request asks for.

The live scheduler and the dry run share these functions, so the estimate's request count is the
number of requests a run sends when every example is kept.
"""

from __future__ import annotations

import math

from core.generate.prompts import RequestSpec, axes_for


def plan_requests(remaining: dict[str, int], per_request: int, start_index: int, run_id: str,
                  axes, seed: int = 0) -> list[RequestSpec]:
    """The requests that cover ``remaining`` exactly, each asking min(per_request, left) examples
    split over labels in proportion to what each still needs (the live scheduler does the same)."""
    left = {k: v for k, v in remaining.items() if v > 0}
    specs, index = [], start_index
    while sum(left.values()) > 0:
        counts = split_counts(left, per_request)
        for k, v in counts.items():
            left[k] -= v
        specs.append(RequestSpec(index, f"{run_id}-{index:05d}", counts, axes_for(index, axes, seed)))
        index += 1
    return specs


def split_counts(need: dict[str, int], size: int) -> dict[str, int]:
    """Split ``min(size, total need)`` examples over labels in proportion to need (largest
    remainder), never giving a label more than it needs."""
    need = {k: v for k, v in need.items() if v > 0}
    total = sum(need.values())
    take = min(size, total)
    if take <= 0:
        return {}
    shares = {k: v * take / total for k, v in need.items()}
    counts = {k: min(need[k], math.floor(s)) for k, s in shares.items()}
    order = sorted(need, key=lambda k: (shares[k] - math.floor(shares[k]), need[k]), reverse=True)
    i = 0
    while sum(counts.values()) < take:
        k = order[i % len(order)]
        if counts[k] < need[k]:
            counts[k] += 1
        i += 1
    return {k: v for k, v in counts.items() if v > 0}
