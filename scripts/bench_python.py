#!/usr/bin/env python3
"""The Python package's speed side by side (scripts/bench.sh python runs this):

1. guest data of a bundle read from the start in reads of 512 B, 4 KiB, 64 KiB and 1 MiB:
   ``open_guest().readinto`` against libphdi's ``pyphdi`` (``read_buffer_at_offset``) and
   ``dissect.hypervisor``'s HDD stream (``read``), on the Parallels Desktop sample and on a 1 GiB
   bundle (every cluster allocated; its image rewritten with the v1 magic, which libphdi reads,
   as the sample has it); the bytes of all three are checked to be the same first.
   Beside them, the floors: ``readinto`` of a raw file holding the same guest bytes (``open(...,
   buffering=0)``, one ``pread`` a call), and a copy of the same size in Python into the same
   buffer (``view[:] = src[o:o + n]`` from a 64 MiB buffer, and from a buffer of zeros), and
   the same copy straight out of the page cache (``view[:] = m[o:o + n]`` over an ``mmap`` of
   the raw file: the bytes moved once, with no system call per read). Every reader of guest
   data has to move the bytes once: the copy is the least a call can cost. At
   1 MiB also ``readinto`` into a page-aligned buffer (``mmap``): the kernel copies from the page
   cache about twice as fast into a 32-byte-aligned buffer, and a ``bytearray`` of 1 MiB is not;
2. ``check`` of 1,000 small images (a third of them damaged) from Python, against a loop of
   ``subprocess.run(["prlimg", "check", ...])``; the exit statuses are checked to be the same.
   Then the whole report of the first 100, ``to_dict()`` (the readers' predictions, made when
   first asked for, included) against ``prlimg check --output json``, checked equal first.

Small reads cover the first BYTES_SMALL bytes (16 MiB at 512 B, 64 MiB at 4 KiB), larger ones the
whole disk. Each figure is the best of ROUNDS (default 3) interleaved rounds, in seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import mmap
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import parallels_image as pi

PIECE = 1 << 20
SIZES = (512, 4096, 64 << 10, 1 << 20)
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def span(size: int, disk: int) -> int:
    """The bytes read in reads of ``size``."""
    return min(disk, {512: 16 << 20, 4096: 64 << 20}.get(size, disk))


def read_ours(bundle: Path, size: int = PIECE, total: int = -1, buf: Any = None, digest: bool = False) -> str:
    h = hashlib.sha256()
    view = memoryview(buf if buf is not None else bytearray(size))
    with pi.open_guest(bundle) as g:
        total = g.size if total < 0 else total
        readinto = g.readinto
        done = 0
        while done < total:
            n = readinto(view)
            if not n:
                break
            done += n
            if digest:
                h.update(view[:n])
    return h.hexdigest()


def read_raw(raw: Path, size: int, total: int, buf: Any = None) -> None:
    view = memoryview(buf if buf is not None else bytearray(size))
    with open(raw, "rb", buffering=0) as f:
        readinto = f.readinto
        done = 0
        while done < total:
            n = readinto(view)
            if not n:
                break
            done += n


def mmap_floor(raw: Path, size: int, total: int) -> None:
    view = memoryview(bytearray(size))
    with open(raw, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        src = memoryview(m)
        o = 0
        while o < total:
            view[:] = src[o : o + size]
            o += size
        src.release()


def copy_floor(size: int, total: int, src: memoryview) -> None:
    view = memoryview(bytearray(size))
    last = len(src) - size
    o = done = 0
    while done < total:
        if o > last:
            o = 0
        view[:] = src[o : o + size]
        o += size
        done += size


def read_pyphdi(bundle: Path, size: int = PIECE, total: int = -1, digest: bool = False) -> str:
    import pyphdi  # type: ignore[import-not-found]

    h = hashlib.sha256()
    handle = pyphdi.handle()
    handle.open(str(bundle / "DiskDescriptor.xml"))
    handle.open_extent_data_files()
    end = handle.get_media_size() if total < 0 else total
    read = handle.read_buffer_at_offset
    off = 0
    while off < end:
        data = read(min(size, end - off), off)
        if digest:
            h.update(data)
        off += len(data)
    handle.close()
    return h.hexdigest()


def read_dissect(bundle: Path, size: int = PIECE, total: int = -1, digest: bool = False) -> str:
    from dissect.hypervisor.disk.hdd import HDD  # type: ignore[import-not-found]

    h = hashlib.sha256()
    stream = HDD(bundle).open()
    read = stream.read
    done = 0
    while total < 0 or done < total:
        data = read(size)
        if not data:
            break
        done += len(data)
        if digest:
            h.update(data)
    return h.hexdigest()


def best(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def side_by_side(label: str, runs: Dict[str, Callable[[], object]]) -> Dict[str, float]:
    times: Dict[str, List[float]] = {k: [] for k in runs}
    for _ in range(ROUNDS):
        for name, fn in runs.items():
            times[name].append(best(fn))
    out = {k: min(v) for k, v in times.items()}
    ours = out["parallels_image"]
    row = ", ".join(f"{k} {v:.4f} s ({v / ours:.2f}x)" for k, v in out.items())
    print(f"{label}: {row}", flush=True)
    return out


def samples(work: Path) -> Path:
    src = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "parallels-desktop" / "expanding.hdd"
    dst = work / "expanding.hdd"
    if not dst.exists():
        dst.mkdir()
        for f in src.iterdir():
            if f.name.endswith(".gz"):
                with gzip.open(f, "rb") as z, open(dst / f.name[:-3], "wb") as o:
                    shutil.copyfileobj(z, o)
            else:
                shutil.copyfile(f, dst / f.name)
    return dst


def settle(path: Path) -> None:
    """Puts the files at ``path`` (a file, or a bundle folder's files) into the page cache as a
    read from the disk would: written out, dropped, read back. A file just written in small
    pieces (the sample, decompressed) sits in small pages that the kernel copies out about 1.5x
    slower (64 MiB in 5.3 ms against 3.7 ms here) than pages that came in by read-ahead; every
    reader reads the same files, but the fastest one would be measured mostly on that."""
    for f in sorted(path.iterdir()) if path.is_dir() else [path]:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            while os.read(fd, 1 << 20):
                pass
        finally:
            os.close(fd)


def aligned(size: int) -> memoryview:
    """A page-aligned writable buffer of ``size`` bytes."""
    return memoryview(mmap.mmap(-1, size))


def main() -> int:
    prlimg, work = sys.argv[1], Path(sys.argv[2])
    big_mib = int(os.environ.get("PY_BIG_MIB", "1024"))
    print(f"parallels_image {pi.__version__}, Python {sys.version.split()[0]}, rounds {ROUNDS}")
    import pyphdi
    from importlib.metadata import version

    print(f"pyphdi {pyphdi.get_version()}, dissect.hypervisor {version('dissect.hypervisor')}")
    print(f"load: {open('/proc/loadavg').read().split()[:3]}")

    sample = samples(work)
    big = work / "big-v1.hdd"
    if not big.exists():
        # libphdi 20260902 refuses the v2 magic (WithouFreSpacExt) that `create --bundle` writes:
        # the bundle's one image is made again with the v1 magic (the same size, clusters and
        # bytes; the descriptor stays as it is).
        fill = ["--size", f"{big_mib}M", "--data", f"0:{big_mib}M:0xa5"]
        subprocess.run([prlimg, "create", "--bundle", *fill, str(big)], check=True)
        (image,) = big.glob("*.hds")
        image.unlink()
        subprocess.run([prlimg, "create", "--v1", "--cluster-size", "1M", *fill, str(image)], check=True)
    parts = os.environ.get("PY_PARTS", "guest,check").split(",")
    src = memoryview(os.urandom(64 << 20))
    zeros = memoryview(bytes(1 << 20))
    for label, bundle in (("Parallels Desktop sample", sample), (f"{big_mib} MiB bundle", big)):
        if "guest" not in parts:
            break
        want = read_ours(bundle, digest=True)
        has_pyphdi = True
        try:
            assert read_pyphdi(bundle, digest=True) == want, f"{label}: pyphdi reads other bytes"
        except OSError as e:
            # libphdi 20260902 refuses the v2 magic (WithouFreSpacExt) of the images prlimg writes
            print(f"{label}: pyphdi cannot read it ({str(e).split('. ')[0]})")
            has_pyphdi = False
        assert read_dissect(bundle, digest=True) == want, f"{label}: dissect reads other bytes"
        raw = work / (bundle.name + ".raw")
        pi.convert(bundle, raw, force=True)
        settle(bundle)
        settle(raw)
        size_of = pi.Bundle.open(bundle).size
        for size in SIZES:
            total = span(size, size_of)
            for name, fn in (("ours", read_ours), ("pyphdi", read_pyphdi), ("dissect", read_dissect)):
                if name == "pyphdi" and not has_pyphdi:
                    continue
                if name != "ours":
                    assert fn(bundle, size, total, digest=True) == read_ours(bundle, size, total, digest=True)
            runs: Dict[str, Callable[[], object]] = {
                "parallels_image": lambda b=bundle, s=size, t=total: read_ours(b, s, t),
                "pyphdi": lambda b=bundle, s=size, t=total: read_pyphdi(b, s, t),
                "dissect.hypervisor": lambda b=bundle, s=size, t=total: read_dissect(b, s, t),
                "floor: raw file readinto": lambda s=size, t=total, r=raw: read_raw(r, s, t),
                "floor: one copy from the page cache (mmap)": lambda s=size, t=total, r=raw: mmap_floor(r, s, t),
                "floor: copy in Python": lambda s=size, t=total: copy_floor(s, t, src),
                "floor: copy of zeros": lambda s=size, t=total: copy_floor(s, t, zeros[: max(s, 1 << 16)]),
            }
            if not has_pyphdi:
                del runs["pyphdi"]
            if size == 1 << 20:
                buf = aligned(size)
                runs["parallels_image, aligned buffer"] = lambda b=bundle, s=size, t=total, a=buf: read_ours(b, s, t, a)
                runs["floor: raw file readinto, aligned buffer"] = lambda s=size, t=total, r=raw, a=buf: read_raw(
                    r, s, t, a
                )
            side_by_side(f"guest data, {label} ({size_of >> 20} MiB), reads of {size} B over {total >> 20} MiB", runs)
        raw.unlink()

    if "check" not in parts:
        return 0
    images = work / "small"
    images.mkdir(exist_ok=True)
    defects = [d.name for d in pi.defects() if d.rule.value in ("R7", "R9", "R17", "R20", "R25")]
    paths: List[Path] = []
    for i in range(1000):
        data = pi.build(size=(1 + i % 16) << 20, cluster_size=65536, data=[(i * 512 % (1 << 20), 4096, 1 + i % 255)])
        if i % 3 == 0:
            try:
                data = pi.corrupt_bytes(data, defects[i % len(defects)], seed=i)
            except pi.DefectError:
                pass
        p = images / f"{i:04}.hds"
        p.write_bytes(data)
        paths.append(p)
    ours = [pi.check(p).exit_code for p in paths]
    theirs = [subprocess.run([prlimg, "check", str(p)], capture_output=True).returncode for p in paths]
    assert ours == theirs, "exit statuses differ"
    print(f"1,000 images: {ours.count(0)} clean, {ours.count(2)} corrupt, {ours.count(3)} leaks")
    side_by_side(
        "check of 1,000 small images (verdict and exit status)",
        {
            "parallels_image": lambda: [pi.check(p).exit_code for p in paths],
            "subprocess prlimg": lambda: [
                subprocess.run([prlimg, "check", str(p)], capture_output=True).returncode for p in paths
            ],
        },
    )
    # The whole report, the readers' predictions included (each reads the guest, an MD5 per MiB
    # per reader): to_dict() against `prlimg check --output json`, on the first 100 images.
    first = paths[:100]
    for p in first[:10]:
        out = subprocess.run([prlimg, "check", "--output", "json", str(p)], capture_output=True, text=True)
        assert pi.check(p).to_dict() == json.loads(out.stdout), p
    side_by_side(
        "check of 100 small images with the readers' predictions (to_dict() = the CLI's JSON)",
        {
            "parallels_image": lambda: [pi.check(p).to_dict() for p in first],
            "subprocess prlimg": lambda: [
                json.loads(subprocess.run([prlimg, "check", "--output", "json", str(p)], capture_output=True).stdout)
                for p in first
            ],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
