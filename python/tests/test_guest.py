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
