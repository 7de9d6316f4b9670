"""Shared fixtures: the prlimg binary (the reference these tests compare with), the Parallels
Desktop sample bundles, the real QEMU tools. A missing one skips its tests with the reason
shown, except under CI=true, where it fails them."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[2]


def need(what: str, found: bool) -> None:
    """Skips (or under CI=true fails) the test when ``what`` is not there."""
    if found:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing (CI=true: every test must run)")
    pytest.skip(f"{what} is missing")


def prlimg_path() -> str:
    env = os.environ.get("PRLIMG")
    candidates: List[str] = [env] if env else []
    candidates += [str(REPO / "target" / p / "prlimg") for p in ("release", "debug")]
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    found = shutil.which("prlimg")
    need("prlimg (cargo build, or PRLIMG=path)", found is not None)
    assert found is not None
    return found


@pytest.fixture(scope="session")
def prlimg() -> str:
    return prlimg_path()


def run(args: List[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Parallels Desktop bundles of ../shared/samples, their images decompressed."""
    src = REPO.parent / "shared" / "samples" / "parallels-desktop"
    need(f"the Parallels Desktop samples ({src})", src.is_dir())
    out = tmp_path_factory.mktemp("samples")
    for bundle in sorted(src.iterdir()):
        dst = out / bundle.name
        dst.mkdir()
        for f in bundle.iterdir():
            if f.name.endswith(".gz"):
                with gzip.open(f, "rb") as z, open(dst / f.name[:-3], "wb") as o:
                    shutil.copyfileobj(z, o)
            else:
                shutil.copyfile(f, dst / f.name)
    yield out


def tool(name: str) -> str:
    found = shutil.which(name)
    need(name, found is not None)
    assert found is not None
    return found
