"""Image.open: header fields, the BAT as a read-only memoryview, bitmaps and their extents."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import parallels_image as pi
from conftest import run

A = "7e4e1c2a-7c7b-4a63-9cf1-0a2b3c4d5e6f"
B = uuid.UUID("0b5d3f3e-1111-4222-8333-444455556666")


def test_header_bat_and_bitmaps(tmp_path: Path, prlimg: str) -> None:
    path = tmp_path / "i.hds"
    pi.create(
        path,
        size=4 << 20,
        cluster_size=1 << 20,
        data=[(2 << 20, 10, 0x5A), (0, 1, 1)],
        bitmaps=[(A, 65536, [(0, 65536), (1 << 20, 131072)]), (B, 512, [(512, 1024)])],
    )
    image = pi.Image.open(path)
    h = image.header
    assert (h.magic, h.version, h.tracks, h.bat_entries, h.nb_sectors) == (b"WithouFreSpacExt", 2, 2048, 4, 8192)
    assert (h.variant, h.cluster_size, h.virtual_size, h.inuse) == ("v2", 1 << 20, 4 << 20, 0)
    # data clusters in the order written: guest cluster 2 first (the data list's order), then 0
    bat = image.bat
    assert bat.readonly and bat.format == "I" and bat.itemsize == 4
    assert bat.tolist()[1] == 0 and bat.tolist()[3] == 0
    assert sorted(bat.tolist()) == sorted([bat[0], 0, bat[2], 0]) and bat[0] != 0 and bat[2] != 0
    with pytest.raises(TypeError):
        bat[0] = 1
    # the BAT view is the bytes of the file at offset 64
    raw = path.read_bytes()
    assert bat.tobytes() == raw[64 : 64 + 16]
    names = [(b.name, b.granularity) for b in image.bitmaps]
    assert names == [(A, 65536), (str(B), 512)]
    assert image.bitmaps[0].dirty_extents() == [(0, 65536), (1 << 20, 131072)]
    bitmap = image.bitmap(B)
    assert bitmap is not None and bitmap.dirty_extents() == [(512, 1024)]
    assert image.bitmap(uuid.uuid4()) is None
    assert image.read((2 << 20) - 1, 12) == b"\x00" + b"\x5a" * 10 + b"\x00"
    # as prlimg info/bitmaps report them
    out = run([prlimg, "info", "--output", "json", str(path)])
    info = json.loads(out.stdout)
    assert (info["bat_entries"], info["data_off"], info["ext_off"]) == (h.bat_entries, h.data_off, h.ext_off)
    assert [b["name"] for b in info["bitmaps"]] == [A, str(B)]


def test_v1_and_inuse(tmp_path: Path) -> None:
    path = tmp_path / "v1.hds"
    pi.create(path, size=1 << 20, cluster_size=4096, v1=True, inuse="v2.1")
    h = pi.Image.open(path).header
    assert (h.magic, h.variant, h.inuse) == (b"WithoutFreeSpace", "v1", int.from_bytes(b"v2.1", "little"))


def test_damaged_image_raises_invalid_image_error_with_where() -> None:
    bad = pi.corrupt_bytes(pi.build(size=4 << 20, cluster_size=65536, data=[(0, 1, 1)]), "zero-tracks")
    with pytest.raises(pi.InvalidImageError) as e:
        pi.Image.from_bytes(bad)
    report = pi.check(bad)
    f = report.findings[0]
    assert (e.value.rule, e.value.location, e.value.message) == (f.rule.value, f.location, f.message)
    assert e.value.where == f.where
    assert e.value.severity == "corruption"


def test_random_bitmap_by_seed_is_reproducible() -> None:
    a = pi.Image.from_bytes(pi.build(size=8 << 20, cluster_size=65536, seed=3, density=0.25))
    b = pi.Image.from_bytes(pi.build(size=8 << 20, cluster_size=65536, seed=3, density=0.25))
    ea, eb = a.bitmaps[0].dirty_extents(), b.bitmaps[0].dirty_extents()
    assert ea == eb and sum(n for _, n in ea) == 32 * 65536
    c = pi.Image.from_bytes(pi.build(size=8 << 20, cluster_size=65536, seed=4, density=0.25))
    assert c.bitmaps[0].dirty_extents() != ea


def test_seed_alone_draws_nothing_as_in_the_cli(tmp_path: Path, prlimg: str) -> None:
    # `--seed` only seeds `--random-bitmap`: alone it changes no byte, in the CLI and here.
    u = "e4f2eed0-37fe-4539-b50b-85d2e7fd235f"
    plain, seeded = (
        pi.build(size=8 << 20, cluster_size=65536, data=[(0, 4096, 7)], bitmaps=[(u, 65536, [(0, 131072)])], seed=s)
        for s in (None, 5)
    )
    assert seeded == plain
    assert [b.dirty_extents() for b in pi.Image.from_bytes(seeded).bitmaps] == [[(0, 131072)]]
    out = tmp_path / "cli.hds"
    cli = ["create", "--size", "8M", "--cluster-size", "64K", "--data", "0:4096:7"]
    r = run([prlimg, *cli, "--bitmap", f"{u}:64K:0+128K", "--seed", "5", str(out)])
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == plain
    # with a density, the same seed draws the same random bitmap in both
    dense = tmp_path / "dense.hds"
    r = run([prlimg, "create", "--size", "8M", "--cluster-size", "64K", "--random-bitmap", "0.25", "--seed", "3", str(dense)])
    assert r.returncode == 0, r.stderr
    assert dense.read_bytes() == pi.build(size=8 << 20, cluster_size=65536, seed=3, density=0.25)


def test_build_errors_are_typed() -> None:
    with pytest.raises(pi.BuildError, match="cluster size 1000"):
        pi.build(size=1 << 20, cluster_size=1000)
    with pytest.raises(ValueError, match="invalid inuse"):
        pi.build(size=1 << 20, inuse="toolong")
    with pytest.raises(ValueError, match="invalid bitmap id"):
        pi.build(size=1 << 20, bitmaps=[("not-a-uuid", 512, [])])
