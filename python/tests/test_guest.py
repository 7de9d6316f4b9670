"""open_guest / Bundle: guest bytes as prlimg convert gives them; readinto in place; convert."""

from __future__ import annotations

import hashlib
import io
import signal
import types
from pathlib import Path
from typing import Optional

import pytest

import parallels_image as pi
from conftest import run

ROOT = "{5fbaabe3-6958-40ff-92a7-860e329aab41}"
CHILD = "{11111111-2222-4333-8444-555555555555}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_all(reader: io.RawIOBase, chunk: int = 1 << 20) -> bytes:
    out = bytearray()
    buf = bytearray(chunk)
    view = memoryview(buf)
    while True:
        n = reader.readinto(view)
        assert n is not None
        if n == 0:
            return bytes(out)
        out += view[:n]


def test_samples_read_as_prlimg_converts_them(samples: Path, prlimg: str, tmp_path: Path) -> None:
    for bundle in sorted(samples.iterdir()):
        raw = tmp_path / (bundle.name + ".raw")
        out = run([prlimg, "convert", str(bundle), str(raw)])
        assert out.returncode == 0, out.stderr
        expected = raw.read_bytes()
        with pi.open_guest(bundle) as g:
            assert isinstance(g, io.RawIOBase) and g.readable() and g.seekable()
            assert g.size == len(expected)
            assert sha(read_all(g)) == sha(expected)
            g.seek(-4096, io.SEEK_END)
            assert g.read() == expected[-4096:]
        with io.BufferedReader(pi.open_guest(bundle / "DiskDescriptor.xml")) as buffered:
            buffered.seek(1234567)
            assert buffered.read(100000) == expected[1234567 : 1234567 + 100000]
        b = pi.Bundle.open(bundle)
        assert b.size == len(expected)
        assert b.top is not None and b.chain() == [b.top]
        assert [s.guid for s in b.snapshots] == [ROOT]
        assert b.check().verdict == "clean"


def test_snapshots_of_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "s.hdd"
    pi.create_bundle(
        path,
        {
            "size": "2M",
            "cluster_size": "64K",
            "top": CHILD,
            "snapshots": [
                {"guid": ROOT, "data": [{"offset": 0, "len": "128K", "byte": 1}]},
                {"guid": CHILD, "parent": ROOT, "data": [{"offset": "64K", "len": 10, "byte": 2}]},
            ],
        },
    )
    b = pi.Bundle.open(path)
    assert b.chain() == [CHILD, ROOT] and b.chain(ROOT) == [ROOT]
    top = b.open_guest().read(65546)
    assert top == b"\x01" * 65536 + b"\x02" * 10
    assert pi.open_guest(path, ROOT).read(65546) == b"\x01" * 65546
    with pytest.raises(pi.BundleReadError):
        b.open_guest("{99999999-2222-4333-8444-555555555555}")


def test_readinto_fills_the_callers_buffer_in_place(tmp_path: Path) -> None:
    path = tmp_path / "g.hds"
    pi.create(path, size=1 << 20, cluster_size=4096, data=[(4096, 4096, 0x33)])
    g = pi.open_guest(path)
    buf = bytearray(b"\xff" * 8192)
    view = memoryview(buf)[2048:6144]
    g.seek(2048)
    assert g.readinto(view) == 4096
    assert buf[:2048] == b"\xff" * 2048 and buf[6144:] == b"\xff" * 2048
    assert buf[2048:4096] == b"\x00" * 2048 and buf[4096:6144] == b"\x33" * 2048
    g.seek((1 << 20) - 10)
    assert g.readinto(bytearray(100)) == 10 and g.readinto(bytearray(100)) == 0
    with pytest.raises((TypeError, BufferError)):
        g.readinto(b"immutable")
    g.close()
    with pytest.raises(ValueError):
        g.readinto(bytearray(1))


def test_keyboard_interrupt_stops_a_long_read(tmp_path: Path) -> None:
    path = tmp_path / "big.hds"
    size = 256 << 20
    pi.create(path, size=size, data=[(0, size, 0x01)])
    g = pi.open_guest(path)
    buf = bytearray(b"\xff") * size

    def interrupt(signum: int, frame: Optional[types.FrameType]) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.002)
        with pytest.raises(KeyboardInterrupt):
            g.readinto(buf)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # the call stopped between two pieces: the end of the buffer was never written
    assert buf[-1] == 0xFF


def test_convert_to_every_format(tmp_path: Path, prlimg: str) -> None:
    src = tmp_path / "src.hds"
    pi.create(src, size=3 << 20, cluster_size=65536, data=[(5, 70000, 0x42), (2 << 20, 512, 0x43)])
    expected = pi.open_guest(src).read()
    for name in ("out.raw", "out.hds", "out.hdd"):
        dst = tmp_path / name
        pi.convert(src, dst)
        assert pi.open_guest(dst).read() == expected if name != "out.raw" else dst.read_bytes() == expected
        assert pi.check(dst).verdict == "clean" if name != "out.raw" else True
        with pytest.raises(pi.OutputError, match="already exists"):
            pi.convert(src, dst)
        pi.convert(src, dst, force=True)
    with pytest.raises(pi.OutputError, match="holds the source"):
        pi.convert(src, src, force=True)
    with pytest.raises(ValueError, match="format"):
        pi.convert(src, tmp_path / "x", format="qcow2")


def test_small_reads_in_any_order_give_the_guest_bytes(tmp_path: Path) -> None:
    # Reads smaller than 16 KiB come from a read-ahead block that grows while they are
    # sequential: sequential, backward and random reads of every small size, across cluster
    # and block edges, unallocated clusters and the end of the disk, give the guest's bytes.
    import random

    path = tmp_path / "r.hds"
    size = 3 << 20
    pi.create(
        path,
        size=size,
        cluster_size=65536,
        data=[(i * 65536 + 7, 65536 - 9, 1 + i % 250) for i in range(0, 48, 3)] + [(size - 100, 100, 0xEE)],
    )
    expected = pi.Image.open(path).read(0, size)
    g = pi.open_guest(path)
    for chunk in (512, 4096, 5000, (16 << 10) - 1, 16 << 10):
        assert read_all(g, chunk) == expected and g.tell() == size
        g.seek(0)
    rng = random.Random(32)
    for _ in range(2000):
        offset = rng.randrange(size + 10)
        length = rng.choice((1, 512, 4096, 7000, 20000))
        g.seek(offset)
        buf = bytearray(length)
        n = g.readinto(buf)
        assert n == max(0, min(length, size - offset)) and g.tell() == offset + n
        assert bytes(buf[:n]) == expected[offset : offset + n]
    # backwards, sector by sector, over the last 64 KiB
    for offset in range(size - 512, size - 65536, -512):
        assert g.seek(offset) == offset and g.read(512) == expected[offset : offset + 512]
    assert g.seek(-10, io.SEEK_END) == size - 10 and g.read() == b"\xee" * 10 and g.read() == b""
    assert g.seek(5, io.SEEK_CUR) == size + 5 and g.readinto(bytearray(10)) == 0
    with pytest.raises(ValueError, match="negative seek position"):
        g.seek(-1)
    with pytest.raises(ValueError, match="invalid whence"):
        g.seek(0, 3)
    # pread-like reads leave the position alone
    g.seek(100)
    buf = bytearray(4096)
    assert g._native.readinto_at(buf, 65536) == 4096 and bytes(buf) == expected[65536 : 65536 + 4096]
    assert g.tell() == 100


def test_a_reader_dropped_early_keeps_its_bound_read(tmp_path: Path) -> None:
    path = tmp_path / "d.hds"
    pi.create(path, size=1 << 20, cluster_size=4096, data=[(0, 3, 9)])
    # the reader is collected (and closed) before its read runs
    assert pi.open_guest(path).read(4) == b"\t\t\t\x00"
    g = pi.open_guest(path)
    g.close()
    for call in (lambda: g.read(1), lambda: g.seek(0), g.tell, g.readall):
        with pytest.raises(ValueError, match="closed file"):
            call()
