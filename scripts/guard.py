#!/usr/bin/env python3
"""The speed guard of `scripts/bench.sh guard`, run in the folder of its images.

    guard.py PRLIMG BITMAP_NAME

Each round runs every command once, in order (interleaved: the machine's load touches both
tools alike); each run is timed by wait4: wall time, user + system CPU time (to the microsecond)
and peak RSS. The ratios are of medians of CPU time, which other processes on a shared machine
move far less than wall time (both are printed); convert's, of each tool's best run (below). A row fails below half its aim.

qemu-img check of the half-allocated 16 Mi-entry image takes minutes of CPU (its duplicate
scan is quadratic): it runs once, after the rounds, and is stopped as soon as its CPU time
reaches half the aim times prlimg's median (the ratio is then at least that: the row passes), or
after GUARD_CAP seconds of wall time (default 240); stopped there with less CPU time than that,
on a machine too loaded to tell, the row says INCONCLUSIVE and does not fail.
Env: GUARD_RUNS (rounds, default 7), GUARD_CAP.
"""
import os, shlex, statistics, subprocess, sys, time

prlimg, name = sys.argv[1], sys.argv[2]
runs = int(os.environ.get("GUARD_RUNS", "7"))
cap = float(os.environ.get("GUARD_CAP", "240"))
nbd = f"nbdinfo --map=qemu:dirty-bitmap:{name} -- [ qemu-nbd -r -f parallels -B {name} bitmap64t.hds ]"
commands = [
    ("prlimg-check-empty", f"{prlimg} check empty.hds"),
    ("qemu-check-empty", "qemu-img check -f parallels empty.hds"),
    # The same empty table written out as zeros (no unwritten extent to pass over): the check
    # reads it, once for every consumer (a build that reads it again per consumer fails here).
    ("prlimg-check-written", f"{prlimg} check written.hds"),
    ("qemu-check-written", "qemu-img check -f parallels written.hds"),
    ("prlimg-check-half", f"{prlimg} check half.hds"),
    ("prlimg-bitmaps", f"{prlimg} bitmaps bitmap64t.hds {name}"),
    ("nbdinfo-bitmaps", nbd),
    # Both outputs synced: prlimg syncs its own, qemu-img does not.
    ("prlimg-convert", f"{prlimg} convert --force dense.hds out.raw && sync out.raw"),
    ("qemu-convert", "qemu-img convert -f parallels -O raw dense.hds out.raw && sync out.raw"),
]


def run(cmd, limit_cpu=None):
    """(wall s, cpu s, maxrss KiB, stopped) of one run of `cmd` (a shell command line).

    CPU time is wait4's, which counts every process of the run; the command runs directly
    (through `sh -c` only when it is a list). Peak RSS comes from a run under /usr/bin/time
    (`rss`): a child of this Python process carries the interpreter's high-water mark through its
    exec into wait4's figure. A run with `limit_cpu` is polled in /proc and stopped there.
    """
    if os.path.exists("out.raw"):
        os.remove("out.raw")
    os.sync()
    t0 = time.monotonic()
    if limit_cpu is not None:
        p = subprocess.Popen(shlex.split(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu = hwm = 0.0
        while p.poll() is None:
            cpu, hwm = max(cpu, proc_cpu(p.pid)), max(hwm, proc_hwm(p.pid))
            if cpu >= limit_cpu or time.monotonic() - t0 > cap:
                p.kill()
                p.wait()
                return time.monotonic() - t0, cpu, int(hwm), True
            time.sleep(0.2)
        sys.exit(f"guard: `{cmd}` ended before it was stopped (exit {p.returncode})")
    argv = ["sh", "-c", cmd] if "&&" in cmd else shlex.split(cmd)
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(p.stderr.read().decode(errors="replace"))
        sys.exit(f"guard: `{cmd}` exited {code}")
    return wall, ru.ru_utime + ru.ru_stime, None, False


def rss(cmd):
    """Peak RSS (KiB) of one run of `cmd` under /usr/bin/time."""
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", "rss.tmp", "sh", "-c", cmd],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return int(open("rss.tmp").read().split()[-1])


def proc_cpu(pid):
    """CPU seconds of process `pid` so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm(pid):
    """Peak RSS of process `pid` so far, KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def load():
    return open("/proc/loadavg").read().split()[:3]


print("load before:", *load(), flush=True)
res = {n: [] for n, _ in commands}
for r in range(runs):
    for n, cmd in commands:
        res[n].append(run(cmd))
    print(f"round {r + 1} of {runs} done (load {' '.join(load())})", flush=True)
med_cpu = {n: max(statistics.median(x[1] for x in v), 1e-6) for n, v in res.items()}
limit = 500 * med_cpu["prlimg-check-half"]
print(f"qemu-img check of the half-allocated image: stopped at {limit:.1f} s of CPU or {cap:.0f} s of wall", flush=True)
res["qemu-check-half"] = [run("qemu-img check -f parallels half.hds", limit_cpu=limit)]
med_cpu["qemu-check-half"] = res["qemu-check-half"][0][1]
peak = {n: rss(cmd) for n, cmd in commands}
peak["qemu-check-half"] = res["qemu-check-half"][0][2]
print("load after:", *load())
print(f"{'command':20} {'runs':>4} {'wall med':>9} {'CPU med':>9} {'maxRSS KiB':>10}   wall / CPU of each run (ms)")
for n, v in res.items():
    each = " ".join(f"{w * 1000:.0f}/{c * 1000:.1f}" for w, c, _, _ in v)
    print(f"{n:20} {len(v):4} {statistics.median(x[0] for x in v) * 1000:7.1f}ms {med_cpu[n] * 1000:7.1f}ms "
          f"{peak[n]:10}   {each}")
rss = peak
failed = 0


def row(label, ratio, aim, note=""):
    global failed
    ok = ratio >= aim / 2
    failed += not ok
    print(f"GUARD {label}: {ratio:.2f} (aim {aim:g}, floor {aim / 2:g}) {'ok' if ok else 'FAIL'}{note}")


row("check, empty 16 Mi entries: qemu-img / prlimg CPU", med_cpu["qemu-check-empty"] / med_cpu["prlimg-check-empty"], 10)
row("check, empty 16 Mi entries, table written as zeros: qemu-img / prlimg CPU",
    med_cpu["qemu-check-written"] / med_cpu["prlimg-check-written"], 10)
half = med_cpu["qemu-check-half"] / med_cpu["prlimg-check-half"]
if res["qemu-check-half"][0][3]:
    if half >= 500:
        print(f"GUARD check, half-allocated 16 Mi entries: qemu-img / prlimg CPU: >= {half:.0f} (aim 1000, floor 500) ok")
    else:
        print(f"GUARD check, half-allocated 16 Mi entries: qemu-img / prlimg CPU: >= {half:.0f} INCONCLUSIVE "
              f"(stopped at the wall cap, {cap:.0f} s: the machine is too loaded to tell)")
else:
    row("check, half-allocated 16 Mi entries: qemu-img / prlimg CPU", half, 1000)
row("bitmaps, 64 TiB: nbdinfo / prlimg CPU", med_cpu["nbdinfo-bitmaps"] / med_cpu["prlimg-bitmaps"], 10)
# Writing 512 MiB charges page-cache reclaim and writeback to whichever process runs into them:
# that noise only adds time, to either tool (one CI run saw prlimg's runs range 162-1005 ms), so
# the convert row compares each tool's best run; the medians' ratio is printed beside it.
best_cpu = {n: max(min(x[1] for x in v), 1e-6) for n, v in res.items()}
row("convert to raw + sync: qemu-img / prlimg CPU, best runs", best_cpu["qemu-convert"] / best_cpu["prlimg-convert"], 1,
    f" (medians: {med_cpu['qemu-convert'] / med_cpu['prlimg-convert']:.2f})")
wall = {n: statistics.median(x[0] for x in v) for n, v in res.items()}
print(f"(convert wall: qemu-img / prlimg {wall['qemu-convert'] / wall['prlimg-convert']:.2f})")
row("check, empty: qemu-img / prlimg peak RSS", rss["qemu-check-empty"] / rss["prlimg-check-empty"], 10)
row("check, half-allocated: qemu-img / prlimg peak RSS", rss["qemu-check-half"] / rss["prlimg-check-half"], 10)
sys.exit(1 if failed else 0)
