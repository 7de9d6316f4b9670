"""examples/parallels_bitmap.py against the real QEMU tools."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import tool

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "parallels_bitmap.py"


def test_parallels_bitmap_example_agrees_with_qemu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("qemu-img", "qemu-nbd", "nbdinfo"):
        tool(name)
    spec = importlib.util.spec_from_file_location("parallels_bitmap", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.rstrip().endswith("PASS")
    assert "ok   dirty extents (qemu-nbd + nbdinfo): [(1048576, 65536), (3145728, 196608), (41943040, 1048576)]" in out
