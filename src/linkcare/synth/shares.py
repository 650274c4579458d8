"""Exact shares: masks holding exactly round(rate × n) of a set, so that a documented rate holds
exactly on any site, whatever its size."""

from __future__ import annotations

import numpy as np


def exact_masks(rng: np.random.Generator, n: int, *rates: float) -> list[np.ndarray]:
    """Return disjoint masks over `n` items, each holding exactly round(rate × n) of them."""
    order = rng.permutation(n)
    masks, start = [], 0
    for rate in rates:
        k = int(round(rate * n))
        mask = np.zeros(n, dtype=bool)
        mask[order[start: start + k]] = True
        masks.append(mask)
        start += k
    return masks


def exact_masks_within(rng: np.random.Generator, eligible: np.ndarray, *rates: float) -> list[np.ndarray]:
    """Return disjoint masks over the items of a boolean array, each holding exactly
    round(rate × eligible.sum()) of the eligible items and none of the others.

    With every item eligible this draws exactly what `exact_masks` draws."""
    where = np.flatnonzero(eligible)
    masks = []
    for inner in exact_masks(rng, where.size, *rates):
        mask = np.zeros(eligible.size, dtype=bool)
        mask[where[inner]] = True
        masks.append(mask)
    return masks


def exact_weighted_subset(rng: np.random.Generator, eligible: np.ndarray, rate: float,
                          weights: np.ndarray) -> np.ndarray:
    """Return a mask of exactly round(rate × eligible.sum()) eligible items, drawn without
    replacement with chances in proportion to `weights` (positive where eligible).

    Each eligible item gets the key E / weight (E exponential); the smallest keys win, which is
    weighted sampling without replacement (Efraimidis and Spirakis, 2006) in one vectorised step."""
    where = np.flatnonzero(eligible)
    k = int(round(rate * where.size))
    mask = np.zeros(eligible.size, dtype=bool)
    if k == 0:
        return mask
    keys = rng.exponential(size=where.size) / weights[where]
    mask[where[np.argsort(keys, kind="stable")[:k]]] = True
    return mask


__all__ = ["exact_masks", "exact_masks_within", "exact_weighted_subset"]
