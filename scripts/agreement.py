#!/usr/bin/env python3
"""Agreement sweep: random field mutations of Parallels images, built without the crate's
corrupt/mutate code, run through real QEMU (qemu-img info / check, read-only) and the real ploop
drivers (pcheck), and compared with `prlimg check --output json`'s predictions.

Usage: scripts/agreement.py [--count N] [--seed S] [--out DIR] [--prlimg PATH] [--ploop DIR]

Bases come from `prlimg create` (v1/v2, 64 KiB / 1 MiB clusters, bitmaps with 0 / 1 / data L1
entries, inuse 0 / v2.1 / pd17) and from `qemu-img create -f parallels` plus `qemu-io` writes.
Each image changes one to three struct-level fields (header, BAT entry, extension magic,
feature header, bitmap header, L1 entry, end record, file length); when the image has an
extension cluster its MD5 (bytes [24, cluster) of the cluster) is recomputed half the time.

Compared, per image:
- QEMU `qemu-img info`: outcome (opens / rejects / aborts / crashes) and the message after
  `Could not open 'PATH': ` (or the assertion text); an "undefined" prediction (QEMU reads past
  its buffer) agrees with anything.
- QEMU `qemu-img check`: the exit code (128 + signal for a signal death).
- ploop `pcheck --check-only` rc (null when it dies), `pcheck --cbt-only` outcome and kept bitmap.

Prints the counts and every disagreement; the images that disagree stay in OUT/disagree/.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys

EXT_MAGIC = 0xAB234CEF23DCEA87
BITMAP_MAGIC = 0x20385FAE252CB34A
INUSE = {"0": 0, "v2.1": 0x312E3276, "pd17": 0x37316470, "Ynot": 0x746F6E59}
HEADER = [  # name, offset, size
    ("magic", 0, 16), ("version", 16, 4), ("heads", 20, 4), ("cylinders", 24, 4),
    ("tracks", 28, 4), ("bat_entries", 32, 4), ("nb_sectors", 36, 8), ("inuse", 44, 4),
    ("data_off", 48, 4), ("flags", 52, 4), ("ext_off", 56, 8),
]


def run(cmd, timeout):
    """(returncode or -signal, stdout, stderr); 'timeout' when it ran too long."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return "timeout", "", ""


def u(b, off, size):
    return int.from_bytes(b[off:off + size], "little")


def put(b, off, size, v):
    b[off:off + size] = (v % (1 << (8 * size))).to_bytes(size, "little")


def interesting(rng, size, old):
    top = (1 << (8 * size)) - 1
    return rng.choice([
        0, 1, 2, 3, 7, 8, 64, 128, 2048, old + 1, max(old - 1, 0), old * 2, old // 2,
        1 << rng.randrange(8 * size), top, top >> 1, (top >> 1) + 1, rng.randrange(top + 1),
        rng.randrange(1 << 16), old ^ (1 << rng.randrange(8 * size)),
    ]) & top


def features(b, ext, cluster):
    """(offset of each record header, kind) in the extension cluster at byte `ext`."""
    out, pos = [], ext + 24
    while pos + 24 <= ext + cluster and pos + 24 <= len(b):
        magic, size = u(b, pos, 8), u(b, pos + 16, 4)
        out.append((pos, magic))
        if magic == 0:
            break
        nxt = ext + ((pos - ext + 24 + size + 7) & ~7)
        if nxt <= pos or size > cluster:
            break
        pos = nxt
    return out


def fix_md5(b, ext, cluster):
    if ext + cluster <= len(b):
        b[ext + 8:ext + 24] = hashlib.md5(bytes(b[ext + 24:ext + cluster])).digest()


def mutate(b, rng):
    """Change 1-3 fields; returns the list of changes made."""
    done = []
    tracks = u(b, 28, 4) or 1
    cluster = tracks * 512
    ext = u(b, 56, 8) * 512
    has_ext = ext != 0 and ext + 24 <= len(b) and u(b, ext, 8) == EXT_MAGIC
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4, 5])):
        target = rng.choice(["header"] * 4 + ["bat"] * 2 + (["ext"] * 6 if has_ext else []) + ["length"])
        if target == "header":
            name, off, size = rng.choice(HEADER)
            if name == "magic":
                b[0:16] = rng.choice([b"WithoutFreeSpace", b"WithouFreSpacExt", b"WithouFreSpacEx!"])
            elif name == "inuse":
                put(b, off, size, rng.choice(list(INUSE.values()) + [0x32326470, rng.randrange(1 << 32)]))
            else:
                put(b, off, size, interesting(rng, size, u(b, off, size)))
            done.append(f"{name}={u(b, off, size) if name != 'magic' else bytes(b[0:16])}")
        elif target == "bat":
            n = min(u(b, 32, 4), (len(b) - 64) // 4, 4096)
            if n == 0:
                continue
            i = rng.randrange(n)
            off = 64 + 4 * i
            others = [u(b, 64 + 4 * j, 4) for j in range(n) if u(b, 64 + 4 * j, 4)]
            v = rng.choice([interesting(rng, 4, u(b, off, 4)), rng.choice(others) if others else 0,
                            len(b) // cluster, len(b) // cluster + 1, u(b, 48, 4) // tracks])
            put(b, off, 4, v)
            done.append(f"bat[{i}]={v}")
        elif target == "length":
            new = rng.choice([len(b) - cluster, len(b) - 512, len(b) + cluster, len(b) + 512, len(b) - 1])
            new = max(new, 0)
            if new < len(b):
                del b[new:]
            else:
                b.extend(bytes(new - len(b)))
            done.append(f"length={new}")
        else:
            recs = features(b, ext, cluster)
            choice = rng.randrange(12)
            if choice >= 10 and recs and recs[-1][1] == 0:
                # Record-level: copy a record over the end record, or an unknown feature, or no end.
                end = recs[-1][0]
                room = ext + cluster - end
                kind = rng.choice(["dup", "unknown", "no-end", "exact", "short-hdr"])
                if kind == "dup" and len(recs) > 1:
                    src, _ = rng.choice(recs[:-1])
                    rec = bytes(b[src:recs[recs.index((src, u(b, src, 8))) + 1][0]])
                elif kind == "unknown":
                    size = rng.choice([0, 8, 13, 64])
                    rec = struct.pack("<QQII", rng.randrange(1 << 64), rng.choice([0, 0, 1, 2]), size, 0)
                    rec += rng.randbytes(size) + bytes(-(24 + size) % 8)
                elif kind in ("exact", "short-hdr") and len(recs) > 1:
                    # The last record's data runs to the cluster's end (or leaves < 24 bytes).
                    last = recs[-2][0]
                    left = ext + cluster - (last + 24) - (rng.randrange(1, 3) * 8 if kind == "short-hdr" else 0)
                    put(b, last + 16, 4, left)
                    if kind == "short-hdr":
                        b[ext + cluster - 16:ext + cluster] = rng.randbytes(16)
                    rec = b""
                else:
                    rec = b"\xff" * room
                rec = rec[:room]
                b[end:end + len(rec)] = rec
                done.append(f"record-{kind}@{end - ext}")
                continue
            if choice == 0 or not recs:
                put(b, ext, 8, interesting(rng, 8, EXT_MAGIC))
                done.append("ext.magic")
                continue
            pos, magic = rng.choice(recs)
            if magic == BITMAP_MAGIC and choice >= 4:
                l1n = u(b, pos + 24 + 28, 4)
                fields = [("size", 0, 8), ("id", 8, 16), ("granularity", 24, 4), ("l1_size", 28, 4)]
                if l1n and choice >= 7:
                    j = rng.randrange(min(l1n, 64))
                    fields = [(f"l1[{j}]", 32 + 8 * j, 8)]
                name, off, size = rng.choice(fields)
                at = pos + 24 + off
                if at + size > len(b):
                    continue
                if name.startswith("l1"):
                    old = u(b, at, 8)
                    v = rng.choice([0, 1, 2, old + 1, old + tracks, len(b) // 512, len(b) // 512 + tracks,
                                    u(b, 48, 4), interesting(rng, 8, old)])
                    put(b, at, 8, v)
                elif name == "id":
                    b[at:at + 16] = rng.randbytes(16) if rng.random() < 0.5 else bytes(16)
                else:
                    put(b, at, size, interesting(rng, size, u(b, at, size)))
                done.append(f"bitmap@{pos - ext}.{name}")
            else:
                name, off, size = rng.choice([("magic", 0, 8), ("flags", 8, 8), ("data_size", 16, 4),
                                              ("unused", 20, 4)])
                if name == "magic":
                    v = rng.choice([0, BITMAP_MAGIC, interesting(rng, 8, magic)])
                elif name == "flags":
                    v = rng.choice([1, 2, 3, interesting(rng, 8, 0)])
                else:
                    v = interesting(rng, size, u(b, pos + off, size))
                put(b, pos + off, size, v)
                done.append(f"feature@{pos - ext}.{name}={v:#x}")
    if has_ext and rng.random() < 0.5:
        fix_md5(b, ext, cluster)
        done.append("md5-fixed")
    return done


def qemu_info(path):
    rc, _, err = run(["qemu-img", "info", "-f", "parallels", path], 30)
    line = err.strip().splitlines()[-1] if err.strip() else ""
    msg = line[len("qemu-img: "):] if line.startswith("qemu-img: ") else line
    if rc == 0:
        return ("opens", None)
    if rc == 1:
        pre = f"Could not open '{path}': "
        return ("rejects", msg[len(pre):] if msg.startswith(pre) else msg)
    if rc == -signal.SIGABRT:
        return ("aborts", msg)
    if rc == "timeout":
        return ("hangs", None)
    if isinstance(rc, int) and rc < 0:
        return ("crashes", -rc)
    return (f"exit {rc}", msg)


def qemu_check(path):
    rc, _, _ = run(["qemu-img", "check", "-f", "parallels", path], 60)
    if isinstance(rc, int) and rc < 0:
        return 128 - rc
    return rc


def ploop(bindir, path, ext_off, inuse):
    rc, out, _ = run([os.path.join(bindir, "pcheck"), "--check-only", path], 60)
    check = None
    if rc == 0:
        for line in out.splitlines():
            if line.startswith("CHECK rc="):
                check = int(line.split()[1][3:])
    elif rc == "timeout":
        check = "timeout"
    rc, out, _ = run([os.path.join(bindir, "pcheck"), "--cbt-only", path], 60)
    uuid = next((l[6:] for l in out.splitlines() if l.startswith("uuid: ")), None)
    if rc != 0:
        return check, "crashes" if rc != "timeout" else "timeout", None
    cbt = next(int(l.split()[1][3:]) for l in out.splitlines() if l.startswith("CBTLOAD rc="))
    if cbt != 0:
        return check, "refuses", None
    if uuid:
        return check, "loads", uuid
    if ext_off == 0:
        return check, "none", None
    return check, "ignores" if inuse == 0 else "loads", None


def bases(out, prlimg):
    os.makedirs(out, exist_ok=True)
    u1, u2, u3 = ("11111111-2222-3333-4444-555555555555", "0badc0de-0000-4000-8000-0000000000aa",
                  "feedface-1234-5678-9abc-def012345678")
    made = []

    def create(name, *args):
        p = os.path.join(out, name)
        if os.path.exists(p):
            os.remove(p)
        subprocess.run([prlimg, "create", *args, p], check=True, stdout=subprocess.DEVNULL)
        made.append(p)

    create("v2-64k-inuse0.hds", "--size", "64M", "--cluster-size", "64K", "--data", "0:200K:0x11",
           "--bitmap", f"{u1}:64K:0+1M")
    create("v2-64k-v21.hds", "--size", "64M", "--cluster-size", "64K", "--data", "1M:300K:0x22",
           "--bitmap", f"{u1}:64K:0+1M", "--bitmap", f"{u2}:4K:", "--inuse", "v2.1")
    create("v1-1m-v21.hds", "--v1", "--size", "300M", "--cluster-size", "1M", "--data", "0:2M:0x33",
           "--bitmap", f"{u1}:512:0+100M", "--inuse", "v2.1")
    create("v2-1m-pd17.hds", "--size", "1G", "--cluster-size", "1M", "--data", "5M:1M:0x44",
           "--random-bitmap", "0.3", "--random-granularity", "512", "--inuse", "pd17")
    create("v2-64k-data-l1.hds", "--size", "1G", "--cluster-size", "64K", "--data", "0:64K:0x55",
           "--random-bitmap", "0.5", "--random-granularity", "512", "--inuse", "v2.1", "--seed", "7")
    create("v1-64k-3bitmaps.hds", "--v1", "--size", "10M", "--cluster-size", "64K", "--bitmap",
           f"{u1}:64K:0+1M", "--bitmap", f"{u2}:128K:2M+1M", "--bitmap", f"{u3}:1M:", "--inuse", "v2.1")
    create("v2-32k-ynot.hds", "--size", "3M", "--cluster-size", "32K", "--data", "0:96K:0x66",
           "--bitmap", f"{u1}:32K:0+3M", "--inuse", "Ynot")
    create("v2-4k-full.hds", "--size", "40M", "--cluster-size", "4K", "--data", "8K:8K:0x77",
           "--bitmap", f"{u2}:4K:0+40M", "--bitmap", f"{u1}:512:0+40M", "--inuse", "v2.1")
    create("v2-1536.hds", "--size", "2M", "--cluster-size", "1536", "--data", "0:3K:0x78",
           "--bitmap", f"{u3}:512:1K+2K")
    create("v2-empty-disk-64k.hds", "--size", "64M", "--cluster-size", "64K", "--bitmap", f"{u3}:64K:",
           "--inuse", "v2.1")
    create("v1-compact.hds", "--v1", "--size", "1M", "--cluster-size", "4K", "--data", "0:12K:0x79")
    q = os.path.join(out, "qemu-64k.hds")
    if os.path.exists(q):
        os.remove(q)
    subprocess.run(["qemu-img", "create", "-q", "-f", "parallels", "-o", "cluster_size=64K", q, "10M"],
                   check=True)
    for cmd in ["write -P 0xaa 0 4k", "write -P 0xbb 1M 128k", "write -P 0xcc 9M 64k"]:
        subprocess.run(["qemu-io", "-f", "parallels", "-c", cmd, q], check=True, stdout=subprocess.DEVNULL)
    made.append(q)
    q = os.path.join(out, "qemu-1m.hds")
    if os.path.exists(q):
        os.remove(q)
    subprocess.run(["qemu-img", "create", "-q", "-f", "parallels", q, "20M"], check=True)
    subprocess.run(["qemu-io", "-f", "parallels", "-c", "write -P 0x5a 3M 1M", q], check=True,
                   stdout=subprocess.DEVNULL)
    made.append(q)
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="/tmp/agreement")
    ap.add_argument("--prlimg", default=os.path.join(os.path.dirname(__file__), "..", "target", "debug", "prlimg"))
    ap.add_argument("--ploop", default=os.environ.get("PLOOP_ORACLE_DIR",
                                                      os.path.expanduser("~/.cache/ploop-oracle")) + "/bin")
    ap.add_argument("--valid", action="store_true", help="also run the unmutated bases")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    base_dir = os.path.join(a.out, "bases")
    keep = os.path.join(a.out, "disagree")
    os.makedirs(keep, exist_ok=True)
    base_files = bases(base_dir, a.prlimg)
    base_bytes = [(os.path.basename(p), open(p, "rb").read()) for p in base_files]
    counts = {"images": 0, "qemu-info": 0, "qemu-check": 0, "ploop-check": 0, "ploop-cbt": 0,
              "undefined": 0}
    bad = []
    work = os.path.join(a.out, "img.hds")
    jobs = [(n, bytearray(b), []) for n, b in base_bytes] if a.valid else []
    for i in range(a.count):
        n, b = rng.choice(base_bytes)
        b = bytearray(b)
        jobs.append((n, b, mutate(b, rng)))
    for i, (n, b, changes) in enumerate(jobs):
        with open(work, "wb") as f:
            f.write(b)
        counts["images"] += 1
        if i % 100 == 0:
            print(f"[{i}/{len(jobs)}]", file=sys.stderr, flush=True)
        rc, out, err = run([a.prlimg, "check", "--output", "json", work], 60)
        if rc == 1 and "not a Parallels image" in err:
            # Not an image at all: QEMU refuses it the same way (no prediction JSON).
            pred, diffs = None, []
            counts["not-an-image"] = counts.get("not-an-image", 0) + 1
            want = ("rejects", "Image not in Parallels format")
            if qemu_info(work) != want or qemu_check(work) != 1:
                diffs.append(f"not an image here, qemu {qemu_info(work)} check {qemu_check(work)}")
        elif rc not in (0, 1, 2, 3) or not out.strip().startswith("{"):
            diffs = [f"prlimg check: exit {rc} {err.strip()[-300:]}"]
            pred = None
        else:
            pred = json.loads(out)
            diffs = []
        if pred:
            q = pred["qemu"]
            kind, detail = qemu_info(work)
            if q["outcome"] == "undefined":
                counts["undefined"] += 1
                counts["qemu-info"] += 1
            else:
                want = (q["outcome"], q["signal"] if q["outcome"] == "crashes" else q["message"])
                if q["outcome"] == "opens":
                    want = ("opens", None)
                if want == (kind, detail):
                    counts["qemu-info"] += 1
                else:
                    diffs.append(f"qemu info: predicted {want}, qemu {(kind, detail)}")
            crc = qemu_check(work)
            pc = pred["qemu_check"]["exit_code"]
            if pc is None and q["outcome"] == "undefined" or pc == crc:
                counts["qemu-check"] += 1
            else:
                diffs.append(f"qemu check: predicted exit {pc} ({pred['qemu_check']['outcome']}), qemu {crc}")
            tally = counts.setdefault("outcomes", {})
            for key in (f"qemu {kind}", f"check exit {crc}", f"ploop cbt {pred['ploop']['cbt']['outcome']}"):
                tally[key] = tally.get(key, 0) + 1
            pl = pred["ploop"]
            ext_off, inuse = (u(b, 56, 8), u(b, 44, 4)) if len(b) >= 64 else (0, 0)
            check_rc, cbt, uuid = ploop(a.ploop, work, ext_off, inuse)
            if pl["check"]["rc"] == check_rc:
                counts["ploop-check"] += 1
            else:
                diffs.append(f"ploop check: predicted rc {pl['check']['rc']}, ploop {check_rc}")
            if (pl["cbt"]["outcome"], pl["cbt"]["bitmap"]) == (cbt, uuid):
                counts["ploop-cbt"] += 1
            else:
                diffs.append(f"ploop cbt: predicted {pl['cbt']['outcome']} {pl['cbt']['bitmap']}, "
                             f"ploop {cbt} {uuid}")
        if diffs:
            name = os.path.join(keep, f"{a.seed}-{i}-{n}")
            shutil.copyfile(work, name)
            bad.append((name, changes, diffs))
            print(f"DISAGREE {name} {' '.join(changes)}", flush=True)
            for d in diffs:
                print(f"    {d}", flush=True)
    print(json.dumps(counts, sort_keys=True))
    print(f"{len(bad)} of {counts['images']} images disagree")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
