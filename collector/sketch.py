"""A mergeable log-bucket quantile sketch (the DDSketch idea) with bounded relative error.

A positive value ``v`` lands in bin ``ceil(log(v) / log(gamma))``; every value in a bin is
within ``RELATIVE_ACCURACY`` of the bin's representative, so any quantile read from the bins is
within that relative error of the true value at that rank. Bins are a plain ``dict[int, int]``
so sketches merge by adding counts, and the hot path is one ``math.log`` and one dict update.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
# Values at or below this (in the caller's unit) are counted in the zero bin.
MIN_VALUE = 1e-9

Bins = dict[int, int]
# The zero bin's key: no real value reaches it, and it sorts below every other bin.
ZERO_KEY = -(2**31)


def bin_value(index: int) -> float:
    """The representative value of a bin: relative error <= RELATIVE_ACCURACY for its members."""
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def add(bins: Bins, value: float) -> None:
    """Count one value; values <= MIN_VALUE go to the zero bin ``ZERO_KEY``."""
    if value > MIN_VALUE:
        i = math.ceil(math.log(value) * _INV_LOG_GAMMA)
        bins[i] = bins.get(i, 0) + 1
    else:
        bins[ZERO_KEY] = bins.get(ZERO_KEY, 0) + 1


def merge_into(target: Bins, source: Mapping[int, int]) -> None:
    get = target.get
    for i, n in source.items():
        target[i] = get(i, 0) + n


def quantiles(bins: Mapping[int, int], qs: Iterable[float]) -> list[float | None]:
    """Values at ranks ``qs`` (each 0..1), ``None`` for all when the sketch is empty."""
    qlist = list(qs)
    total = sum(bins.values())
    if total == 0:
        return [None for _ in qlist]
    keys = sorted(bins)
    out: list[float | None] = []
    for q in qlist:
        # Rank of the wanted value, as DDSketch does it: the value below which q of counts lie.
        rank = q * (total - 1)
        seen = 0
        value = 0.0
        for k in keys:
            seen += bins[k]
            if seen > rank:
                value = 0.0 if k == ZERO_KEY else bin_value(k)
                break
        out.append(value)
    return out
