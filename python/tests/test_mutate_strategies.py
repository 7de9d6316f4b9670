"""mutate(): variants by seed from one buffer; the Hypothesis strategy images()."""

from __future__ import annotations

import doctest

from hypothesis import HealthCheck, given, settings

import parallels_image as pi
import parallels_image.strategies as strategies
from parallels_image.strategies import GeneratedImage, images

BASE = pi.build(
    size=2 << 20,
    cluster_size=4096,
    data=[(0, 8192, 7)],
    bitmaps=[("7e4e1c2a-7c7b-4a63-9cf1-0a2b3c4d5e6f", 4096, [(0, 65536)])],
)


def test_variants_are_reproducible_and_edited() -> None:
    first = list(pi.mutate(BASE, count=300, seed=11))
    again = list(pi.mutate(BASE, count=300, seed=11))
    assert first == again and len(first) == 300
    assert all(1 <= len(edits) <= 3 for _, edits in first)
    assert sum(variant != BASE for variant, _ in first) >= 290
    # the variant for one seed does not depend on the batch it was made in
    assert list(pi.mutate(BASE, count=1, seed=11 + 299)) == first[299:]
    for variant, _ in first[:50]:
        try:
            pi.check(variant)  # hostile input: a report or a typed error, never a crash
        except pi.ParallelsImageError:
            pass


def test_mutate_refuses_what_is_not_an_image() -> None:
    try:
        list(pi.mutate(b"not an image at all, not even close", count=1))
    except pi.NotParallelsError as e:
        assert e.found == b"not an image at "
    else:
        raise AssertionError("no error")


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(images())
def test_strategy_images_check_as_drawn(example: GeneratedImage) -> None:
    report = pi.check(example.data)
    if example.defect is None:
        assert report.verdict == "clean" and report.findings == []
        image = pi.Image.from_bytes(example.data)
        for (ident, granularity, extents), bitmap in zip(example.bitmaps, image.bitmaps):
            assert (bitmap.name, bitmap.granularity) == (ident, granularity)
            assert bitmap.dirty_extents() == extents
        for offset, length, byte in example.fills[-1:]:
            assert image.read(offset, length) == bytes([byte]) * length
    else:
        assert example.rule is not None
        # The defect's rule is found (a few defects on tiny images break a second rule too:
        # bat-too-large-to-read also moves the data area, R14).
        assert example.rule in report.rules, (example.defect, report.rules)
        assert report.verdict != "clean" or example.rule.severity in (pi.Severity.NOTE, pi.Severity.NON_CANONICAL)


def test_doctests_of_the_package_run() -> None:
    for module in (pi, strategies):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, raise_on_error=False)
        assert result.failed == 0 and result.attempted > 0, (module.__name__, result)


def test_every_public_function_has_an_example_that_runs() -> None:
    # The issue: the docs of each function give an example that the test suite runs (the
    # doctests above run every one of them).
    import inspect

    functions = [getattr(pi, n) for n in pi.__all__ if inspect.isfunction(getattr(pi, n))]
    functions.append(strategies.images)
    assert len(functions) == 12
    missing = [f.__name__ for f in functions if ">>>" not in (f.__doc__ or "")]
    assert missing == []
    finder = doctest.DocTestFinder()
    found = {t.name.rsplit(".", 1)[-1] for m in (pi, strategies) for t in finder.find(m) if t.examples}
    assert {f.__name__ for f in functions} <= found
