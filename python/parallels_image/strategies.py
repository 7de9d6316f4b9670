"""Hypothesis strategies for property tests of Parallels readers and validators.

:func:`images` draws images held in memory: valid ones (random sizes, cluster sizes, data and
dirty bitmaps) and, when asked, each damaged by one defect of the catalogue, which breaks
exactly one rule. Each example says what it is, so a property can state what a reader must do.

>>> from hypothesis import given, settings
>>> @settings(max_examples=5, database=None)
... @given(images(damaged=False))
... def valid(example: GeneratedImage) -> None:
...     assert check(example.data).verdict == "clean"
>>> valid()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from hypothesis import assume
from hypothesis import strategies as st

from . import DefectError, Rule, build, check, corrupt_bytes, defects

__all__ = ["GeneratedImage", "images"]

_SECTOR = 512


@dataclass(frozen=True)
class GeneratedImage:
    """An image drawn by :func:`images`: its bytes, and the defect applied (``None``: valid)."""

    data: bytes
    size: int
    cluster_size: int
    fills: List[Tuple[int, int, int]] = field(default_factory=list)
    bitmaps: List[Tuple[str, int, List[Tuple[int, int]]]] = field(default_factory=list)
    defect: Optional[str] = None
    rule: Optional[Rule] = None


@st.composite
def _valid(draw: st.DrawFn, max_size: int) -> GeneratedImage:
    cluster_size = draw(st.sampled_from([4096, 8192, 65536]))
    clusters = draw(st.integers(min_value=1, max_value=max(1, max_size // cluster_size)))
    size = clusters * cluster_size - draw(st.integers(min_value=0, max_value=7)) * _SECTOR
    fills: List[Tuple[int, int, int]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        offset = draw(st.integers(min_value=0, max_value=size - 1))
        length = draw(st.integers(min_value=1, max_value=min(size - offset, 3 * cluster_size)))
        fills.append((offset, length, draw(st.integers(min_value=1, max_value=255))))
    bitmaps: List[Tuple[str, int, List[Tuple[int, int]]]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        ident = str(draw(st.uuids(version=4)))
        granularity = draw(st.sampled_from([g for g in (512, 4096, 65536) if g <= size]))
        granules = size // granularity
        start = draw(st.integers(min_value=0, max_value=granules - 1))
        count = draw(st.integers(min_value=1, max_value=granules - start))
        bitmaps.append((ident, granularity, [(start * granularity, count * granularity)]))
    data = build(size=size, cluster_size=cluster_size, data=fills, bitmaps=bitmaps)
    return GeneratedImage(data, size, cluster_size, fills, bitmaps)


@st.composite
def _damaged(draw: st.DrawFn, max_size: int) -> GeneratedImage:
    base = draw(_valid(max_size))
    defect = draw(st.sampled_from(defects()))
    seed = draw(st.integers(min_value=0, max_value=1 << 16))
    try:
        data = corrupt_bytes(base.data, defect.name, seed=seed)
    except DefectError:
        # The drawn image lacks what this defect damages (a bitmap, a second cluster...).
        assume(False)
        raise  # not reached: assume(False) stops the example
    return GeneratedImage(
        data, base.size, base.cluster_size, base.fills, base.bitmaps, defect.name, defect.rule
    )


def images(*, damaged: Optional[bool] = None, max_size: int = 4 << 20) -> st.SearchStrategy[GeneratedImage]:
    """Images of at most ``max_size`` guest bytes: valid ones (``damaged=False``), ones with one
    defect each (``damaged=True``), or both (``None``).

    >>> import warnings
    >>> from hypothesis import HealthCheck, find, settings
    >>> from hypothesis.errors import HypothesisWarning
    >>> from parallels_image import check
    >>> once = settings(database=None, max_examples=50, suppress_health_check=list(HealthCheck))
    >>> with warnings.catch_warnings():  # find() reprs every image it draws: long bytes
    ...     warnings.simplefilter("ignore", HypothesisWarning)
    ...     valid = find(images(damaged=False), lambda i: len(i.fills) > 0, settings=once)
    ...     bad = find(images(damaged=True), lambda i: i.rule is not None, settings=once)
    >>> check(valid.data).verdict
    <Verdict.CLEAN: 'clean'>
    >>> bad.rule in check(bad.data).rules
    True
    """
    if damaged is None:
        return st.one_of(_valid(max_size), _damaged(max_size))
    return _damaged(max_size) if damaged else _valid(max_size)
