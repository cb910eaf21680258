"""Which rows of those waiting make the next model batch: the fullest, tightest band of similar lengths.

A pure function of the sorted row lengths, kept apart from the batcher's loop so it is tested against a brute
force on its own.
"""

from __future__ import annotations

import bisect


def band(lengths: list[int], anchors: list[int], max_rows: int, max_tokens: int) -> tuple[int, int]:
    """[lo, hi) over ascending `lengths`: holds at least one of the ascending `anchors`, at most max_rows rows
    and max_tokens padded tokens (a lone row may exceed it), as many rows as fit, then the least padding,
    then the leftmost."""
    n = len(lengths)
    if n <= max_rows and lengths[-1] * n <= max_tokens:
        return 0, n
    prefix = [0]
    for value in lengths:
        prefix.append(prefix[-1] + value)
    for size in range(min(max_rows, n, max(1, max_tokens // lengths[anchors[0]])), 0, -1):
        best: tuple[int, int] | None = None
        for lo in range(max(0, anchors[0] - size + 1), min(anchors[-1], n - size) + 1):
            hi = lo + size
            following = bisect.bisect_left(anchors, lo)  # the first anchor at or after lo
            if following == len(anchors) or anchors[following] >= hi:
                continue
            padded = lengths[hi - 1] * size
            if size > 1 and padded > max_tokens:
                continue
            waste = padded - (prefix[hi] - prefix[lo])
            if best is None or waste < best[0]:
                best = (waste, lo)
        if best is not None:
            return best[1], best[1] + size
    return anchors[0], anchors[0] + 1  # pragma: no cover - size 1 always fits
