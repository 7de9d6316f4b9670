"""check(): verdicts, rules and whole reports as prlimg gives them."""

from __future__ import annotations

import io
import json
import os
import subprocess
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import parallels_image as pi
import parallels_image.strategies
from conftest import run

BITMAP = "7e4e1c2a-7c7b-4a63-9cf1-0a2b3c4d5e6f"


def cli_json(prlimg: str, path: Path, *extra: str) -> Dict[str, Any]:
    out = run([prlimg, "check", "--output", "json", *extra, str(path)])
    parsed: Dict[str, Any] = json.loads(out.stdout)
    parsed["_exit"] = out.returncode
    return parsed


def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.hds"
    pi.create(
        path,
        size=8 << 20,
        cluster_size=65536,
        data=[(0, 70000, 0xAB), (3 << 20, 4096, 0x11)],
        bitmaps=[(BITMAP, 65536, [(131072, 65536), (1 << 20, 1 << 20)])],
    )
    return path


def test_clean_image_report_equals_the_cli_json(tmp_path: Path, prlimg: str) -> None:
    path = base(tmp_path)
    report = pi.check(path)
    cli = cli_json(prlimg, path)
    assert report.verdict is pi.Verdict.CLEAN and report.verdict.value == "clean"
    assert report.exit_code == 0 == cli.pop("_exit")
    assert report.findings == []
    assert report.to_dict() == cli
    assert report.statistics == (
        cli["total_clusters"],
        cli["allocated_clusters"],
        cli["fragmented_clusters"],
        cli["image_end_offset"],
    )
    assert report.qemu == cli["qemu"] and report.qemu is not None
    assert report.qemu["bitmaps"] == [BITMAP]
    assert report.ploop == cli["ploop"]
    assert report.qemu_check == cli["qemu_check"]
    assert report.libphdi == cli["libphdi"] and report.dissect == cli["dissect"]


def test_image_report_has_the_readers_blocks_of_the_cli(tmp_path: Path, prlimg: str) -> None:
    # libphdi 20260902 refuses the v2 magic (WithouFreSpacExt) and reads the v1 one (of 1 MiB
    # clusters: it refuses a block size of 128 sectors);
    # dissect.hypervisor reads both.
    v2, v1 = tmp_path / "v2.hds", tmp_path / "v1.hds"
    pi.create(v2, size=4 << 20, cluster_size=1 << 20, data=[(0, 4096, 1)])
    pi.create(v1, size=4 << 20, cluster_size=1 << 20, data=[(0, 4096, 1)], v1=True)
    for path, libphdi in ((v2, "refuses"), (v1, "opens")):
        report = pi.check(path)
        cli = cli_json(prlimg, path)
        assert report.libphdi is not None and report.dissect is not None
        assert (report.libphdi["outcome"], report.dissect["outcome"]) == (libphdi, "opens")
        assert report.libphdi == cli["libphdi"] and report.dissect == cli["dissect"]
        assert report.dissect == {
            "outcome": "opens",
            "message": None,
            "media_size": 4 << 20,
            "top": "{5fbaabe3-6958-40ff-92a7-860e329aab41}",
            "misread_mib": [],
            "misread_mib_omitted": 0,
            "read_size": 1 << 20,
        }
    assert pi.check(v2).libphdi == {
        "outcome": "refuses",
        "message": "libphdi_sparse_image_header_read_data: unsupported signature",
        "media_size": 4 << 20,
        "top": "{5fbaabe3-6958-40ff-92a7-860e329aab41}",
        "misread_mib": [],
        "misread_mib_omitted": 0,
        "read_size": 1 << 20,
    }
    # An image held in memory has no file to hand the readers: no blocks, as `prlimg check -`.
    from_bytes = pi.check(v2.read_bytes())
    assert "libphdi" not in from_bytes.to_dict() and from_bytes.libphdi is None and from_bytes.dissect is None
    stdin = subprocess.run([prlimg, "check", "--output", "json", "-"], input=v2.read_bytes(), capture_output=True)
    assert "libphdi" not in json.loads(stdin.stdout)


def test_image_too_large_to_predict_has_null_readers_as_the_cli(tmp_path: Path, prlimg: str) -> None:
    # More than 2**20 clusters: the CLI writes "libphdi": null, "dissect": null.
    path = tmp_path / "many.hds"
    pi.create(path, size=((1 << 20) + 1) * 4096, cluster_size=4096)
    assert pi.Image.open(path).bat_entries == (1 << 20) + 1
    report = pi.check(path)
    cli = cli_json(prlimg, path)
    assert cli["libphdi"] is None and cli["dissect"] is None
    d = report.to_dict()
    assert "libphdi" in d and "dissect" in d and d["libphdi"] is None and d["dissect"] is None
    assert report.libphdi is None and report.dissect is None
    assert report.exit_code == cli.pop("_exit") == 0
    assert d == cli


@pytest.mark.parametrize("defect", [d.name for d in pi.defects()])
def test_every_defect_gives_its_rule_as_the_cli_does(tmp_path: Path, prlimg: str, defect: str) -> None:
    src = base(tmp_path)
    bad = tmp_path / "bad.hds"
    try:
        pi.corrupt(src, bad, defect)
    except pi.DefectError as e:
        # The catalogue says which structure is missing; the CLI refuses the same way.
        assert e.defect == defect
        out = run([prlimg, "corrupt", "--defect", defect, str(src), str(tmp_path / "cli.hds")])
        assert e.needs is not None and out.returncode != 0 and e.needs in out.stderr
        return
    expected = next(d.rule for d in pi.defects() if d.name == defect)
    report = pi.check(bad)
    cli = cli_json(prlimg, bad)
    assert expected in report.rules
    assert [r.value for r in report.rules] == cli["rules"]
    assert report.exit_code == cli.pop("_exit")
    assert report.to_dict() == cli
    for f, c in zip(report.findings, cli["findings"]):
        assert (f.rule.value, f.severity.value, f.location, f.message) == (
            c["code"],
            c["severity"],
            c["location"],
            c["message"],
        )
        assert f.where == c["where"]
    # bytes and buffers give the same findings as the file
    data = bad.read_bytes()
    for buf in (data, bytearray(data), memoryview(data)):
        assert pi.check(buf).findings == report.findings


def test_leaks_and_lenient(tmp_path: Path, prlimg: str) -> None:
    path = base(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\x01" * 65536)
    report = pi.check(path)
    assert report.verdict == "leaks" and report.exit_code == 3
    assert [(f.rule, f.severity) for f in report.findings] == [(pi.Rule.R20, pi.Severity.LEAK)]
    assert report.to_dict() == {k: v for k, v in cli_json(prlimg, path).items() if k != "_exit"}
    lenient = pi.check(path, lenient=True)
    assert lenient.lenient and lenient.to_dict()["mode"] == "lenient"


def test_bundles_checked_as_the_cli_does(samples: Path, prlimg: str) -> None:
    for bundle in sorted(samples.iterdir()):
        for target in (bundle, bundle / "DiskDescriptor.xml"):
            report = pi.check(target)
            cli = cli_json(prlimg, target)
            assert report.kind == "bundle"
            assert report.exit_code == cli.pop("_exit") == 0
            assert report.to_dict() == cli
            assert report.verdict == "clean"
            assert report.qemu is None
            assert report.libphdi is not None and report.libphdi == cli["libphdi"]
            assert report.dissect is not None and report.dissect == cli["dissect"]


@pytest.mark.parametrize("defect", [d for d in pi.defects(bundle=True)], ids=lambda d: d.name)
def test_damaged_bundle(tmp_path: Path, prlimg: str, defect: pi.Defect) -> None:
    src = tmp_path / "ok.hdd"
    pi.create_bundle(src, {"size": "4M", "split_at": ["2M"], "snapshots": [
        {"guid": "{5fbaabe3-6958-40ff-92a7-860e329aab41}", "data": [{"offset": 0, "len": 4096, "byte": 1}]},
        {"guid": "{11111111-2222-4333-8444-555555555555}", "parent": "{5fbaabe3-6958-40ff-92a7-860e329aab41}"},
    ]})
    bad = tmp_path / "bad.hdd"
    try:
        pi.corrupt(src, bad, defect.name)
    except (pi.DefectError, pi.BuildError) as e:
        # Not applicable to this bundle: the CLI refuses it with the same reason.
        out = run([prlimg, "corrupt", "--defect", defect.name, str(src), str(tmp_path / "cli.hdd")])
        assert out.returncode != 0 and str(e) in out.stderr
        return
    report = pi.check(bad)
    cli = cli_json(prlimg, bad)
    assert report.exit_code == cli.pop("_exit")
    assert report.to_dict() == cli
    assert [r.value for r in report.rules] == cli["rules"]
    assert defect.rule in report.rules


def test_rule_enum_is_the_library_table() -> None:
    from parallels_image import _native

    assert [(r.value, r.label, r.severity.value) for r in pi.Rule] == _native.rules()


def test_missing_path_is_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        pi.check(tmp_path / "nope.hds")
    assert e.value.filename == str(tmp_path / "nope.hds")


def test_not_an_image_is_an_error_with_what_was_found(tmp_path: Path, prlimg: str) -> None:
    with pytest.raises(pi.NotParallelsError) as e:
        pi.check(b"hello, world" * 10)
    assert e.value.found == b"hello, worldhell"
    assert e.value.expected == (b"WithoutFreeSpace", b"WithouFreSpacExt")
    path = tmp_path / "text.hds"
    path.write_bytes(b"hello, world" * 10)
    with pytest.raises(pi.NotParallelsError) as f:
        pi.check(path)
    out = run([prlimg, "check", str(path)])
    assert out.returncode == 1 and str(f.value) in out.stderr
    assert f.value.path == str(path)
    # a damaged magic that is still recognisably Parallels is a report of R1
    bad = bytearray(pi.build(size=1 << 20))
    bad[0] = ord("w")
    assert [x.rule for x in pi.check(bytes(bad)).findings] == [pi.Rule.R1]


def test_fifo_is_read_as_a_stream(tmp_path: Path) -> None:
    import threading

    data = pi.build(size=1 << 20, inuse="Ynot")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    report = pi.check(fifo)
    t.join(timeout=10)
    assert [f.rule for f in report.findings] == [pi.Rule.R7]


def test_images_made_by_qemu_img(tmp_path: Path, prlimg: str) -> None:
    from conftest import tool

    qemu_img = tool("qemu-img")
    for opts in (["-o", "cluster_size=1M"], ["-o", "cluster_size=64K"]):
        path = tmp_path / "q.hds"
        out = run([qemu_img, "create", "-q", "-f", "parallels", *opts, str(path), "64M"])
        assert out.returncode == 0, out.stderr
        report = pi.check(path)
        cli = cli_json(prlimg, path)
        assert report.exit_code == cli.pop("_exit") == 0
        assert report.to_dict() == cli
        image = pi.Image.open(path)
        assert image.virtual_size == 64 << 20 and image.bitmaps == []
        assert set(image.bat.tolist()) == {0}
        path.unlink()


def test_repair_as_the_cli_does(tmp_path: Path, prlimg: str) -> None:
    src = base(tmp_path)
    leaky = tmp_path / "leaky.hds"
    pi.corrupt(src, leaky, "trailing-leak")
    assert pi.check(leaky).verdict == "leaks"
    dry = pi.repair(leaky, dry_run=True)
    assert (dry["written"], dry["after"], dry["before"]) == (False, None, "leaks")
    assert [a["rule"] for a in dry["actions"]] == ["R20"]
    fixed = tmp_path / "fixed.hds"
    plan = pi.repair(leaky, fixed)
    assert (plan["written"], plan["before"], plan["after"]) == (True, "leaks", "clean")
    assert pi.check(fixed).to_dict()["result"] == "clean"
    cli_out = tmp_path / "cli.hds"
    out = run([prlimg, "repair", str(leaky), str(cli_out)])
    assert out.returncode == 0, out.stderr
    assert cli_out.read_bytes() == fixed.read_bytes()
    with pytest.raises(pi.OutputError, match="already exists"):
        pi.repair(leaky, fixed)
    with pytest.raises(pi.OutputError, match="is the input image"):
        pi.repair(leaky, leaky)
    with pytest.raises(ValueError):
        pi.repair(leaky)
    # corruption needs all=True
    bad = tmp_path / "bad.hds"
    pi.corrupt(src, bad, "bat-entry-past-eof")
    assert pi.repair(bad, dry_run=True)["unrepaired"] == ["R18"]
    plan = pi.repair(bad, in_place=True, all=True)
    assert plan["after"] in ("clean", "leaks") and plan["unrepaired"] == []


def test_keyboard_interrupt_stops_the_readers_predictions(tmp_path: Path) -> None:
    # The readers' predictions (made when the report is first asked for them) read every
    # allocated MiB, up to 1 GiB, three times: seconds for 256 MiB of data, and Ctrl-C stops
    # the wait at once.
    import signal
    import types
    from typing import Optional

    path = tmp_path / "big.hds"
    pi.create(path, size=256 << 20, data=[(0, 256 << 20, 0x01)])
    report = pi.check(path)
    assert report.verdict == "clean" and report.qemu is not None

    def interrupt(signum: int, frame: Optional[types.FrameType]) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            report.to_dict()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # asked again, the predictions are made
    assert report.libphdi is not None and report.libphdi["outcome"] == "refuses"
    assert report.dissect is not None and report.dissect["outcome"] == "opens"


def test_the_issues_names_have_their_signatures() -> None:
    import inspect

    def params(fn: Any) -> List[Tuple[str, str, Any]]:
        return [(p.name, p.kind.name, p.default) for p in inspect.signature(fn).parameters.values()]

    empty = inspect.Parameter.empty
    assert params(pi.check) == [("source", "POSITIONAL_OR_KEYWORD", empty), ("lenient", "KEYWORD_ONLY", False)]
    assert params(pi.open_guest) == [("path", "POSITIONAL_OR_KEYWORD", empty), ("snapshot", "POSITIONAL_OR_KEYWORD", None)]
    create = params(pi.create)
    assert create[:2] == [("path", "POSITIONAL_OR_KEYWORD", empty), ("size", "KEYWORD_ONLY", empty)]
    named = {n: (k, d) for n, k, d in create}
    assert named["cluster_size"] == ("KEYWORD_ONLY", 1 << 20)
    assert named["data"] == ("KEYWORD_ONLY", ()) and named["bitmaps"] == ("KEYWORD_ONLY", ())
    assert named["v1"] == ("KEYWORD_ONLY", False)
    assert named["inuse"] == ("KEYWORD_ONLY", None) and named["seed"] == ("KEYWORD_ONLY", None)
    assert params(pi.create_bundle)[:2] == [
        ("path", "POSITIONAL_OR_KEYWORD", empty),
        ("recipe", "POSITIONAL_OR_KEYWORD", empty),
    ]
    assert params(pi.corrupt)[:3] == [(n, "POSITIONAL_OR_KEYWORD", empty) for n in ("src", "dst", "defect")]
    assert params(pi.defects) == [("bundle", "KEYWORD_ONLY", False)]
    mutate = params(pi.mutate)
    assert mutate[:3] == [
        ("src", "POSITIONAL_OR_KEYWORD", empty),
        ("count", "KEYWORD_ONLY", empty),
        ("seed", "KEYWORD_ONLY", 0),
    ]
    assert params(pi.Image.open)[0][0] == "path" and params(pi.Bundle.open)[0][0] == "path"
    assert issubclass(pi.Rule, Enum) and issubclass(pi.Severity, Enum)
    assert issubclass(pi.GuestReader, io.RawIOBase)
    for name in ("verdict", "findings", "qemu", "ploop", "libphdi", "dissect", "exit_code"):
        assert isinstance(getattr(pi.Report, name), property), name
    assert callable(pi.Report.to_dict)
    assert [f for f in pi.Finding.__dataclass_fields__][:4] == ["rule", "severity", "message", "location"]
    for name in ("name", "granularity"):
        assert name in pi.Bitmap.__init__.__code__.co_varnames
    assert callable(pi.Bitmap.dirty_extents) and callable(pi.repair) and callable(pi.convert)
    assert pi.strategies.images is not None
