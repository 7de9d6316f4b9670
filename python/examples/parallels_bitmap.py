#!/usr/bin/env python3
"""QEMU's ``parallels-bitmap`` iotest scenario, written with ``parallels_image`` instead of
``struct.pack`` and ``hashlib.md5``: an image with a dirty bitmap is made, QEMU reads the bitmap
back over NBD (``qemu-nbd -B`` + ``nbdinfo``), both ``qemu-img check`` and the package check the
image, then the image is damaged and checked again, QEMU's answers each time compared with
the package's prediction of them.

Run: ``python parallels_bitmap.py [WORKDIR]``; exits 0 when QEMU agrees with every prediction,
1 (saying where) otherwise. Needs qemu-img, qemu-nbd and nbdinfo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

import parallels_image as pi

BITMAP = "8b8c1c9f-3b2b-4a33-9f46-6a0e0d7b2c11"
SIZE = 64 << 20
CLUSTER = 64 << 10
GRANULARITY = 64 << 10
# dirty ranges written by the "guest": the iotest marks two writes, one across a cluster edge
DIRTY = [(1 << 20, 64 << 10), (3 << 20, 3 * (64 << 10)), (40 << 20, 1 << 20)]


def qemu_map(image: str, workdir: str, bitmap: str) -> List[Tuple[int, int]]:
    """The dirty extents of ``bitmap`` as QEMU exports them: qemu-nbd -B, read by nbdinfo."""
    sock = os.path.join(workdir, "nbd.sock")
    with subprocess.Popen(
        ["qemu-nbd", "-r", "-t", "-f", "parallels", "-B", bitmap, "-k", sock, image],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as server:
        out = _map(server, sock, bitmap)
    dirty: List[Tuple[int, int]] = []
    for e in json.loads(out.stdout):
        if e["type"] != 1:
            continue
        if dirty and dirty[-1][0] + dirty[-1][1] == e["offset"]:
            dirty[-1] = (dirty[-1][0], dirty[-1][1] + e["length"])
        else:
            dirty.append((e["offset"], e["length"]))
    return dirty


def _map(server: "subprocess.Popen[bytes]", sock: str, bitmap: str) -> "subprocess.CompletedProcess[str]":
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            if server.poll() is not None or time.monotonic() > deadline:
                err = server.stderr.read().decode() if server.stderr else ""
                raise RuntimeError(f"qemu-nbd did not start: {err.strip()}")
            time.sleep(0.02)
        return subprocess.run(
            ["nbdinfo", f"--map=qemu:dirty-bitmap:{bitmap}", "--json", f"nbd+unix:///?socket={sock}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        server.terminate()
        server.wait(timeout=20)


def qemu_check(image: str) -> Tuple[int, str]:
    out = subprocess.run(["qemu-img", "check", "-f", "parallels", image], capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def expect(what: str, got: object, want: object, failures: List[str]) -> None:
    mark = "ok  " if got == want else "FAIL"
    print(f"{mark} {what}: {got!r}" + ("" if got == want else f" (expected {want!r})"))
    if got != want:
        failures.append(what)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    workdir = args[0] if args else tempfile.mkdtemp(prefix="parallels-bitmap-")
    failures: List[str] = []
    image = os.path.join(workdir, "test.hds")

    # 1. An image with one bitmap, as QEMU's test builds it by hand.
    pi.create(image, size=SIZE, cluster_size=CLUSTER, bitmaps=[(BITMAP, GRANULARITY, DIRTY)], force=True)
    opened = pi.Image.open(image)
    expect("bitmaps in the image", [b.name for b in opened.bitmaps], [BITMAP], failures)
    expect("dirty extents (package)", opened.bitmaps[0].dirty_extents(), DIRTY, failures)

    # 2. QEMU reads it back over NBD.
    expect("dirty extents (qemu-nbd + nbdinfo)", qemu_map(image, workdir, BITMAP), DIRTY, failures)

    # 3. Checked by both.
    report = pi.check(image)
    code, text = qemu_check(image)
    expect("package verdict", report.verdict.value, "clean", failures)
    expect("qemu-img check exit status", code, report.qemu_check["exit_code"] if report.qemu_check else None, failures)
    expect("qemu-img info bitmaps (predicted)", report.qemu["bitmaps"] if report.qemu else None, [BITMAP], failures)

    # 4. Damaged: the extension's checksum no longer matches; QEMU drops the bitmaps.
    damaged = os.path.join(workdir, "damaged.hds")
    pi.corrupt(image, damaged, "ext-bad-checksum", force=True)
    report = pi.check(damaged)
    code, text = qemu_check(damaged)
    expect("rules broken", [r.value for r in report.rules], ["R25"], failures)
    expect("qemu-img check exit status (damaged)", code, report.qemu_check["exit_code"] if report.qemu_check else None, failures)
    info = subprocess.run(
        ["qemu-img", "info", "-f", "parallels", "--output", "json", damaged], capture_output=True, text=True, timeout=60
    )
    predicted = report.qemu or {}
    expect("qemu-img info exit status (damaged)", info.returncode, predicted.get("exit_code"), failures)
    if info.returncode == 0:
        seen = [
            b["name"]
            for b in json.loads(info.stdout).get("format-specific", {}).get("data", {}).get("bitmaps", [])
        ]
        expect("qemu-img info bitmaps (damaged)", seen, predicted.get("bitmaps"), failures)
    else:
        expect("qemu-img info message (damaged)", predicted.get("message", "") in info.stderr, True, failures)

    print("PASS" if not failures else f"FAIL: {', '.join(failures)}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
