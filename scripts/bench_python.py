#!/usr/bin/env python3
"""The Python package's speed side by side (scripts/bench.sh python runs this):

1. guest data of a bundle read start to end in 1 MiB pieces: ``open_guest().readinto`` against
   libphdi's ``pyphdi`` and ``dissect.hypervisor``'s HDD, on the Parallels Desktop sample and on
   a 1 GiB bundle written by ``prlimg create --bundle`` (every cluster allocated); the bytes of
   all three are checked to be the same first;
2. ``check`` of 1,000 small images (a third of them damaged) from Python, against a loop of
   ``subprocess.run(["prlimg", "check", ...])``; the exit statuses are checked to be the same.

Each figure is the best of ROUNDS (default 3) interleaved rounds, in seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import parallels_image as pi

PIECE = 1 << 20
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def read_ours(bundle: Path, digest: bool = False) -> str:
    h = hashlib.sha256()
    buf = bytearray(PIECE)
    view = memoryview(buf)
    with pi.open_guest(bundle) as g:
        while True:
            n = g.readinto(view)
            if not n:
                break
            if digest:
                h.update(view[:n])
    return h.hexdigest()


def read_pyphdi(bundle: Path, digest: bool = False) -> str:
    import pyphdi  # type: ignore[import-not-found]

    h = hashlib.sha256()
    handle = pyphdi.handle()
    handle.open(str(bundle / "DiskDescriptor.xml"))
    handle.open_extent_data_files()
    size = handle.get_media_size()
    off = 0
    while off < size:
        data = handle.read_buffer_at_offset(min(PIECE, size - off), off)
        if digest:
            h.update(data)
        off += len(data)
    handle.close()
    return h.hexdigest()


def read_dissect(bundle: Path, digest: bool = False) -> str:
    from dissect.hypervisor.disk.hdd import HDD  # type: ignore[import-not-found]

    h = hashlib.sha256()
    stream = HDD(bundle).open()
    while True:
        data = stream.read(PIECE)
        if not data:
            break
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
    row = ", ".join(f"{k} {v:.3f} s ({v / ours:.1f}x)" for k, v in out.items())
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


def main() -> int:
    prlimg, work = sys.argv[1], Path(sys.argv[2])
    big_mib = int(os.environ.get("PY_BIG_MIB", "1024"))
    print(f"parallels_image {pi.__version__}, Python {sys.version.split()[0]}, rounds {ROUNDS}")
    import pyphdi
    from importlib.metadata import version

    print(f"pyphdi {pyphdi.get_version()}, dissect.hypervisor {version('dissect.hypervisor')}")

    sample = samples(work)
    big = work / "big.hdd"
    if not big.exists():
        subprocess.run(
            [prlimg, "create", "--bundle", "--size", f"{big_mib}M", "--data", f"0:{big_mib}M:0xa5", str(big)],
            check=True,
        )
    for label, bundle in (("Parallels Desktop sample", sample), (f"{big_mib} MiB bundle", big)):
        runs: Dict[str, Callable[[], object]] = {
            "parallels_image": lambda b=bundle: read_ours(b),
            "pyphdi": lambda b=bundle: read_pyphdi(b),
            "dissect.hypervisor": lambda b=bundle: read_dissect(b),
        }
        want = read_ours(bundle, True)
        try:
            assert read_pyphdi(bundle, True) == want, f"{label}: pyphdi reads other bytes"
        except OSError as e:
            # libphdi 20260902 refuses the v2 magic (WithouFreSpacExt) of the images prlimg writes
            print(f"{label}: pyphdi cannot read it ({str(e).split('. ')[0]})")
            del runs["pyphdi"]
        assert read_dissect(bundle, True) == want, f"{label}: dissect reads other bytes"
        size = pi.Bundle.open(bundle).size
        side_by_side(f"guest data, {label} ({size >> 20} MiB)", runs)

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
        "check of 1,000 small images",
        {
            "parallels_image": lambda: [pi.check(p).exit_code for p in paths],
            "subprocess prlimg": lambda: [
                subprocess.run([prlimg, "check", str(p)], capture_output=True).returncode for p in paths
            ],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
