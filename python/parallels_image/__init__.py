"""Read, check, create, damage and mutate Parallels disk images (``.hds``, ``.hdd`` bundles)
and the Parallels Format Extension with its dirty bitmaps.

The native part (``parallels_image._native``) is the Rust library ``parallels-image`` with
conversions only; what it reports is typed there and handed over as Python objects (no JSON in
between). Example::

    >>> import os, tempfile, parallels_image as pi
    >>> d = tempfile.mkdtemp()
    >>> path = os.path.join(d, "a.hds")
    >>> _ = pi.create(path, size=16 << 20, cluster_size=64 << 10, data=[(0, 4096, 0xAA)],
    ...               bitmaps=[("7e4e1c2a-7c7b-4a63-9cf1-0a2b3c4d5e6f", 65536, [(131072, 65536)])])
    >>> pi.check(path).verdict
    <Verdict.CLEAN: 'clean'>
    >>> pi.Image.open(path).bitmaps[0].dirty_extents()
    [(131072, 65536)]
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, Iterable, Iterator, List, Literal, Optional, Sequence, Tuple, TypedDict, Union

from . import _native
from ._native import (
    BuildError,
    BundleReadError,
    DefectError,
    InvalidBundleError,
    InvalidImageError,
    NotParallelsError,
    OutputError,
    ParallelsImageError,
)

__all__ = [
    "BuildError",
    "Bitmap",
    "Bundle",
    "BundleReadError",
    "Defect",
    "DefectError",
    "Finding",
    "Header",
    "GuestReader",
    "Image",
    "InvalidBundleError",
    "InvalidImageError",
    "NotParallelsError",
    "OutputError",
    "ParallelsImageError",
    "ReaderPrediction",
    "Report",
    "Rule",
    "Severity",
    "Snapshot",
    "Verdict",
    "build",
    "check",
    "convert",
    "corrupt",
    "corrupt_bytes",
    "create",
    "create_bundle",
    "defects",
    "mutate",
    "open_guest",
    "repair",
]

for _error in (
    BuildError,
    BundleReadError,
    DefectError,
    InvalidBundleError,
    InvalidImageError,
    NotParallelsError,
    OutputError,
    ParallelsImageError,
):
    _error.__module__ = __name__

__version__: str = _native.__version__
JSON_SCHEMA: int = _native.JSON_SCHEMA

StrPath = Union[str, "os.PathLike[str]"]
Buffer = Union[bytes, bytearray, memoryview]


class Severity(str, Enum):
    """How serious a finding is, in the categories of ``qemu-img check`` plus two."""

    NOTE = "note"
    NON_CANONICAL = "non-canonical"
    LEAK = "leak"
    CORRUPTION = "corruption"


class Verdict(str, Enum):
    """What the findings amount to; compares equal to its name (``"clean"``)."""

    CLEAN = "clean"
    LEAKS = "leaks"
    CORRUPT = "corrupt"

    @property
    def exit_code(self) -> int:
        """``qemu-img check``'s (and ``prlimg check``'s) exit status: 0, 3 or 2."""
        return {"clean": 0, "leaks": 3, "corrupt": 2}[self.value]


class Rule(str, Enum):
    """A numbered rule: an image's (``R1`` ... of spec/rules.md) or a bundle's (``D1`` ... of
    spec/bundles.md). Compares equal to its code.

    >>> Rule("R18") is Rule.R18, Rule.R18 == "R18", Rule.R18.severity
    (True, True, <Severity.CORRUPTION: 'corruption'>)
    """

    R1 = "R1"
    R2 = "R2"
    R3 = "R3"
    R4 = "R4"
    R5 = "R5"
    R6 = "R6"
    R7 = "R7"
    R8 = "R8"
    R9 = "R9"
    R10 = "R10"
    R11 = "R11"
    R12 = "R12"
    R13 = "R13"
    R14 = "R14"
    R15 = "R15"
    R16 = "R16"
    R17 = "R17"
    R18 = "R18"
    R19 = "R19"
    R20 = "R20"
    R21 = "R21"
    R22 = "R22"
    R23 = "R23"
    R24 = "R24"
    R25 = "R25"
    R26 = "R26"
    R27 = "R27"
    R28 = "R28"
    R29 = "R29"
    R30 = "R30"
    R31 = "R31"
    R32 = "R32"
    R33 = "R33"
    R34 = "R34"
    R35 = "R35"
    R36 = "R36"
    R37 = "R37"
    R38 = "R38"
    R39 = "R39"
    R40 = "R40"
    R41 = "R41"
    R42 = "R42"
    R43 = "R43"
    R44 = "R44"
    R45 = "R45"
    R46 = "R46"
    R47 = "R47"
    R48 = "R48"
    R49 = "R49"
    D1 = "D1"
    D2 = "D2"
    D3 = "D3"
    D4 = "D4"
    D5 = "D5"
    D6 = "D6"
    D7 = "D7"
    D8 = "D8"
    D9 = "D9"
    D10 = "D10"
    D11 = "D11"
    D12 = "D12"
    D13 = "D13"
    D14 = "D14"
    D15 = "D15"
    D16 = "D16"
    D17 = "D17"
    D18 = "D18"
    D19 = "D19"
    D20 = "D20"
    D21 = "D21"
    D22 = "D22"

    @property
    def label(self) -> str:
        """The rule's title in the spec (``str.title`` is taken)."""
        return _RULE_TABLE[self.value][0]

    @property
    def severity(self) -> Severity:
        """How serious a breach is (in strict mode)."""
        return Severity(_RULE_TABLE[self.value][1])


_RULE_TABLE: Dict[str, Tuple[str, str]] = {code: (title, sev) for code, title, sev in _native.rules()}


@dataclass(frozen=True)
class Finding:
    """One broken rule: where and what. ``location`` is the image location as ``prlimg check``
    prints it (``"BAT[3] @76"``); ``where`` is the same as a dict; ``file`` names the image of a
    bundle's ``R`` finding (``None`` for an image, and for a bundle's descriptor)."""

    rule: Rule
    severity: Severity
    message: str
    location: Optional[str]
    file: Optional[str] = None
    where: Optional[Dict[str, Any]] = None


class ReaderPrediction(TypedDict):
    """What another real reader of Parallels disks does with the disk (``Report.libphdi``,
    ``Report.dissect``): the keys of ``prlimg check --output json``'s ``libphdi`` and
    ``dissect`` blocks, predicted by the library (``parallels_image::readers``), not run."""

    outcome: Literal["opens", "refuses", "misreads", "crashes", "hangs"]
    """What it does: reads the guest's bytes, raises an error, reads other bytes, dies, loops."""
    message: Optional[str]
    """Its error (``refuses``), signal (``crashes``), loop (``hangs``), or what it misreads."""
    media_size: Optional[int]
    """The media size it reports, in bytes, when it gets that far."""
    top: Optional[str]
    """The snapshot it takes as the top (a braced GUID), when it gets that far."""
    misread_mib: List[int]
    """The MiBs whose bytes differ from the guest's (``misreads`` only; at most 4,096)."""
    misread_mib_omitted: int
    """Misread MiBs past those listed."""
    read_size: int
    """The size of the reads the disk is read with."""


class Report:
    """A conformance check of one image or bundle, as ``prlimg check`` makes it.

    >>> r = check(build(size=1 << 20, inuse="Ynot"))
    >>> r.verdict, r.exit_code, [(f.rule, f.severity) for f in r.findings]
    (<Verdict.CORRUPT: 'corrupt'>, 2, [(<Rule.R7: 'R7'>, <Severity.CORRUPTION: 'corruption'>)])
    >>> r.qemu["outcome"], r.to_dict()["result"]
    ('opens', 'corrupt')
    """

    __slots__ = ("_native", "_dict", "_base", "_findings")

    def __init__(self, native: Any) -> None:
        self._native = native
        self._dict: Optional[Dict[str, Any]] = None
        self._base: Optional[Dict[str, Any]] = None
        self._findings: Optional[List[Finding]] = None

    @property
    def kind(self) -> str:
        """``"image"`` or ``"bundle"``."""
        return str(self._native.kind)

    @property
    def filename(self) -> str:
        return str(self._native.filename)

    @property
    def lenient(self) -> bool:
        return bool(self._native.lenient)

    @property
    def verdict(self) -> Verdict:
        return Verdict(self._native.verdict)

    @property
    def exit_code(self) -> int:
        """``prlimg check``'s exit status: 0 clean, 2 corrupt, 3 leaks only."""
        return int(self._native.exit_code)

    @property
    def findings(self) -> List[Finding]:
        if self._findings is None:
            self._findings = [
                Finding(Rule(code), Severity(sev), message, location, file, where)
                for code, sev, message, location, file, where in self._native.findings()
            ]
        return list(self._findings)

    @property
    def rules(self) -> List[Rule]:
        """The rules broken, in the order first found, each once."""
        seen: List[Rule] = []
        for f in self.findings:
            if f.rule not in seen:
                seen.append(f.rule)
        return seen

    @property
    def statistics(self) -> Optional[Tuple[int, int, int, int]]:
        """``(total, allocated, fragmented, image_end_offset)`` as ``qemu-img check`` counts."""
        s = self._native.statistics
        return None if s is None else (int(s[0]), int(s[1]), int(s[2]), int(s[3]))

    def to_dict(self) -> Dict[str, Any]:
        """The report as ``prlimg check --output json`` prints it, the readers' blocks
        (``libphdi``, ``dissect``) included: for an image they are predicted on the first call
        (reading the guest, up to 1 GiB), the rest of the report is made by :func:`check`."""
        if self._dict is None:
            self._dict = dict(self._native.to_dict(True))
        return dict(self._dict)

    def _part(self, key: str) -> Any:
        if self.kind != "image":
            return None
        if self._base is None:
            self._base = dict(self._native.to_dict(False))
        return self._base.get(key)

    @property
    def qemu(self) -> Optional[Dict[str, Any]]:
        """What ``qemu-img info`` (QEMU 10) does with the image; ``None`` for a bundle."""
        value: Optional[Dict[str, Any]] = self._part("qemu")
        return value

    @property
    def qemu_check(self) -> Optional[Dict[str, Any]]:
        """What ``qemu-img check`` does; ``None`` for a bundle."""
        value: Optional[Dict[str, Any]] = self._part("qemu_check")
        return value

    @property
    def qemu_read_write(self) -> Optional[str]:
        """What a read-write open in QEMU does; ``None`` for a bundle."""
        value: Optional[str] = self._part("qemu_read_write")
        return value

    @property
    def ploop(self) -> Optional[Dict[str, Any]]:
        """What ploop does: its check, its CBT loader, a mount; ``None`` for a bundle."""
        value: Optional[Dict[str, Any]] = self._part("ploop")
        return value

    @property
    def libphdi(self) -> Optional[ReaderPrediction]:
        """What libyal's libphdi (``pyphdi``) does with the image or bundle, as ``prlimg check``
        predicts it; ``None`` where the CLI has none: an image checked from a buffer or a
        stream, an image of more than 2**20 clusters (the CLI's ``null``), a bundle whose
        storages cannot be read.

        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "r.hds")
        >>> _ = create(p, size=1 << 20, v1=True)
        >>> r = check(p)
        >>> r.libphdi["outcome"], r.dissect["outcome"], r.libphdi["media_size"]
        ('opens', 'opens', 1048576)
        >>> check(build(size=1 << 20)).libphdi is None
        True
        """
        value: Optional[ReaderPrediction] = self.to_dict().get("libphdi")
        return value

    @property
    def dissect(self) -> Optional[ReaderPrediction]:
        """What fox-it's dissect.hypervisor does with it, as :attr:`libphdi` says."""
        value: Optional[ReaderPrediction] = self.to_dict().get("dissect")
        return value

    def __repr__(self) -> str:
        return f"<Report {self.filename!r} {self.verdict.value} rules={[r.value for r in self.rules]}>"


def check(source: Union[StrPath, Buffer], *, lenient: bool = False) -> Report:
    """Checks an image file, a bundle (its folder or ``DiskDescriptor.xml``), a device, or an
    image held in ``bytes``/a buffer: every rule, with what QEMU and ploop would do.

    ``lenient``: unknown features and feature flags are notes (ploop's reading), not
    corruption. Raises ``OSError`` when the path cannot be read; a damaged image is a report.

    >>> data = bytearray(build(size=1 << 20))
    >>> check(data).verdict
    <Verdict.CLEAN: 'clean'>
    >>> data[0] = ord("w")
    >>> [f.rule for f in check(bytes(data)).findings]
    [<Rule.R1: 'R1'>]
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Report(_native.check_buffer(source, lenient))
    return Report(_native.check_path(os.fspath(source), lenient))


@dataclass(frozen=True)
class Header:
    """An image's header: the fields as stored, and what they mean."""

    magic: bytes
    version: int
    heads: int
    cylinders: int
    tracks: int
    bat_entries: int
    nb_sectors: int
    inuse: int
    data_off: int
    flags: int
    ext_off: int
    variant: str
    cluster_size: int
    virtual_size: int
    file_size: int


class Bitmap:
    """A dirty bitmap of an image's Format Extension."""

    def __init__(self, image: Any, name: str, granularity: int, feature: int, id: bytes) -> None:
        self._image = image
        self.name = name
        """The bitmap's UUID as text (QEMU's name for it)."""
        self.granularity = granularity
        """Bytes of guest data per bit."""
        self.feature = feature
        """The feature record's index in the extension."""
        self.id = uuid.UUID(bytes=bytes(id))

    def dirty_extents(self) -> List[Tuple[int, int]]:
        """The dirty ranges ``(offset, length)`` in guest bytes, merged, in order."""
        return [(int(o), int(n)) for o, n in self._image.dirty_extents(self.feature)]

    def __repr__(self) -> str:
        return f"<Bitmap {self.name} granularity={self.granularity}>"


class Image:
    """An opened image: header, BAT, bitmaps, guest bytes.

    >>> img = Image.from_bytes(build(size=4 << 20, cluster_size=1 << 20, data=[(1 << 20, 512, 1)]))
    >>> img.header.cluster_size, img.header.bat_entries, img.bat.tolist()
    (1048576, 4, [0, 1, 0, 0])
    >>> img.read(1 << 20, 4)
    b'\\x01\\x01\\x01\\x01'
    """

    def __init__(self, native: Any, path: Optional[str]) -> None:
        self._native = native
        self.path = path
        self.header = Header(**native.header())

    @classmethod
    def open(cls, path: StrPath, *, lenient: bool = False) -> "Image":
        """Opens the image at ``path``; raises ``InvalidImageError`` if it cannot be read as one."""
        p = os.fspath(path)
        return cls(_native.Image.open(p, lenient), p)

    @classmethod
    def from_bytes(cls, data: Buffer, *, lenient: bool = False) -> "Image":
        """Opens an image held in memory."""
        return cls(_native.Image.from_bytes(bytes(data), lenient), None)

    @property
    def bat(self) -> memoryview:
        """The BAT as a read-only ``memoryview`` of unsigned 32-bit entries, over bytes read once
        (no copy per access). Entries are little-endian as stored (this view reads them so on
        little-endian hosts)."""
        return memoryview(self._native.bat).cast("I")

    @property
    def bitmaps(self) -> List[Bitmap]:
        return [Bitmap(self._native, n, int(g), int(f), bytes(i)) for n, g, f, i in self._native.bitmaps()]

    def bitmap(self, name: Union[str, uuid.UUID]) -> Optional[Bitmap]:
        """The bitmap with this UUID, if any."""
        wanted = uuid.UUID(str(name))
        return next((b for b in self.bitmaps if b.id == wanted), None)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` guest bytes from ``offset`` (zeros where nothing is allocated)."""
        return bytes(self._native.read(offset, length))

    @property
    def cluster_size(self) -> int:
        return self.header.cluster_size

    @property
    def virtual_size(self) -> int:
        """The guest's size in bytes."""
        return self.header.virtual_size

    @property
    def bat_entries(self) -> int:
        return self.header.bat_entries

    def check(self, *, lenient: bool = False) -> "Report":
        """This image's conformance report (read again from its file, or its bytes)."""
        if self.path is not None:
            return check(self.path, lenient=lenient)
        raise ValueError("an image opened from bytes: use check(data)")

    def __repr__(self) -> str:
        h = self.header
        return f"<Image {self.path!r} {h.variant} size={h.virtual_size} cluster={h.cluster_size}>"


_NATIVE_METHODS = ("readinto", "read", "readall", "seek", "tell")


def _closed(*args: Any) -> Any:
    raise ValueError("I/O operation on closed file")


class GuestReader(io.RawIOBase):
    """The guest's bytes of an image or a bundle (at a snapshot): readable, seekable.

    ``readinto`` fills the caller's buffer in place: reads of 16 KiB or more straight from
    the image files (one ``pread`` per run of contiguous clusters, without the GIL); smaller
    ones from a read-ahead block that grows while the reads are sequential (up to 1 MiB), so
    that a parser reading sectors makes one system call per block, not one per sector.
    ``read`` reads into the new ``bytes`` object itself. The position, the reads and ``seek``
    are the native reader's (``readinto``, ``read``, ``readall``, ``seek`` and ``tell`` are its
    methods, bound to the instance: no Python frame per call)."""

    def __init__(self, native: Any) -> None:
        super().__init__()
        self._native = native
        self.size: int = int(native.size)
        # The native methods themselves, as instance attributes: they take the place of the
        # methods below (which say what they do and type them) without a Python call between.
        self.__dict__.update({name: getattr(native, name) for name in _NATIVE_METHODS})

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Fills ``buffer`` (a writable contiguous buffer) from the position; the bytes filled."""
        return int(self._native.readinto(buffer))

    def read(self, size: Optional[int] = -1) -> bytes:
        """Up to ``size`` bytes from the position (to the end if negative or ``None``)."""
        return bytes(self._native.read(size))

    def readall(self) -> bytes:
        return bytes(self._native.readall())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._native.seek(offset, whence))

    def tell(self) -> int:
        return int(self._native.tell())

    def close(self) -> None:
        # The native reader stays open for the methods already taken from this one (``open_guest
        # (p).read()`` closes the reader when it is collected, before its ``read`` runs).
        self.__dict__.update({name: _closed for name in _NATIVE_METHODS})
        super().close()

    @property
    def files(self) -> List[str]:
        """The files read, top layer first."""
        return list(self._native.files)

    def data_ranges(self) -> List[Tuple[int, int]]:
        """Guest ranges ``(offset, length)`` that may hold data; the rest reads as zeros."""
        return [(int(o), int(n)) for o, n in self._native.data_ranges()]


def open_guest(path: StrPath, snapshot: Optional[str] = None) -> GuestReader:
    """The guest disk of an image, or of a bundle (folder or descriptor) at ``snapshot`` (a GUID;
    the top if ``None``), as a readable, seekable binary file.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = create(os.path.join(d, "g.hds"), size=1 << 20, cluster_size=4096, data=[(8192, 2, 7)])
    >>> with open_guest(os.path.join(d, "g.hds")) as g:
    ...     _ = g.seek(8191)
    ...     g.read(4)
    b'\\x00\\x07\\x07\\x00'
    """
    return GuestReader(_native.Guest.open(os.fspath(path), snapshot))


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of a bundle: its GUID and its parent's (the null GUID for the root)."""

    guid: str
    parent: str


class Bundle:
    """A disk bundle (``NAME.hdd/`` with ``DiskDescriptor.xml``).

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> create_bundle(os.path.join(d, "b.hdd"), {"size": "4M", "snapshots": [
    ...     {"guid": "{5fbaabe3-6958-40ff-92a7-860e329aab41}", "data": [{"offset": 0, "len": 512, "byte": 9}]}]})
    >>> b = Bundle.open(os.path.join(d, "b.hdd"))
    >>> b.size, len(b.snapshots), b.open_guest().read(2), b.check().verdict
    (4194304, 1, b'\\t\\t', <Verdict.CLEAN: 'clean'>)
    """

    def __init__(self, native: Any) -> None:
        self._native = native

    @classmethod
    def open(cls, path: StrPath) -> "Bundle":
        return cls(_native.Bundle.open(os.fspath(path)))

    @property
    def dir(self) -> str:
        return str(self._native.dir)

    @property
    def size(self) -> int:
        """The guest's size in bytes."""
        return int(self._native.size)

    @property
    def top(self) -> Optional[str]:
        """The top snapshot's GUID, ``None`` if the descriptor's TopGUID is not valid."""
        top: Optional[str] = self._native.top
        return top

    @property
    def snapshots(self) -> List[Snapshot]:
        return [Snapshot(g, p) for g, p in self._native.snapshots()]

    def storages(self) -> List[Tuple[int, int, int, List[Tuple[str, str, str]]]]:
        """``(start, end, blocksize, [(guid, type, file), ...])`` per storage, in sectors."""
        return [(int(s), int(e), int(b), list(ims)) for s, e, b, ims in self._native.storages()]

    def chain(self, snapshot: Optional[str] = None) -> List[str]:
        """The snapshots read for ``snapshot`` (the top if ``None``), it first, the root last."""
        return list(self._native.chain(snapshot))

    def open_guest(self, snapshot: Optional[str] = None) -> GuestReader:
        """The guest disk at ``snapshot`` (a GUID; the top if ``None``)."""
        return GuestReader(self._native.guest(snapshot))

    guest = open_guest

    def check(self, *, lenient: bool = False) -> Report:
        return Report(self._native.check(lenient))


def _args(
    size: int,
    cluster_size: int,
    data: Iterable[Tuple[int, int, int]],
    bitmaps: Iterable[Tuple[Union[str, uuid.UUID, bytes], int, Sequence[Tuple[int, int]]]],
    v1: bool,
    inuse: Union[int, str, None],
    seed: Optional[int],
    density: Optional[float],
    granularity: int,
) -> Tuple[Any, ...]:
    bms = [(str(i) if isinstance(i, uuid.UUID) else i, g, list(e)) for i, g, e in bitmaps]
    return (size, cluster_size, list(data), bms, v1, inuse, density, seed or 0, granularity)


def create(
    path: StrPath,
    *,
    size: int,
    cluster_size: int = 1 << 20,
    data: Iterable[Tuple[int, int, int]] = (),
    bitmaps: Iterable[Tuple[Union[str, uuid.UUID, bytes], int, Sequence[Tuple[int, int]]]] = (),
    v1: bool = False,
    inuse: Union[int, str, None] = None,
    seed: Optional[int] = None,
    density: Optional[float] = None,
    granularity: int = 64 << 10,
    force: bool = False,
) -> int:
    """Writes a new image at ``path`` as ``prlimg create`` does, and returns its length.

    ``data``: ``(offset, length, byte)`` fills of guest bytes. ``bitmaps``: ``(uuid,
    granularity, [(offset, length), ...])`` dirty ranges in guest bytes. ``v1``: the v1 magic.
    ``inuse``: the header's inuse, a number or a 4-letter tag (``"v2.1"``, ``"Ynot"``).
    ``density``: also a random bitmap with this fraction of granules (of ``granularity`` bytes)
    dirty, drawn from ``seed`` (0 if ``None``), as ``--random-bitmap``/``--seed``: ``seed``
    alone draws nothing, so it changes no byte. An existing file is replaced only with
    ``force``; the file is written aside and renamed.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "c.hds")
    >>> create(p, size=1 << 20, cluster_size=65536, v1=True)
    65536
    >>> create(p, size=1 << 20)
    Traceback (most recent call last):
    ...
    parallels_image.OutputError: ... already exists
    """
    a = _args(size, cluster_size, data, bitmaps, v1, inuse, seed, density, granularity)
    return int(_native.create(os.fspath(path), a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], force))


def build(
    *,
    size: int,
    cluster_size: int = 1 << 20,
    data: Iterable[Tuple[int, int, int]] = (),
    bitmaps: Iterable[Tuple[Union[str, uuid.UUID, bytes], int, Sequence[Tuple[int, int]]]] = (),
    v1: bool = False,
    inuse: Union[int, str, None] = None,
    seed: Optional[int] = None,
    density: Optional[float] = None,
    granularity: int = 64 << 10,
) -> bytes:
    """The bytes of a new image, with the arguments of :func:`create`.

    >>> data = build(size=1 << 20, cluster_size=4096)
    >>> len(data), data[:16]
    (4096, b'WithouFreSpacExt')
    """
    a = _args(size, cluster_size, data, bitmaps, v1, inuse, seed, density, granularity)
    return bytes(_native.build(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]))


def create_bundle(path: StrPath, recipe: Dict[str, Any], *, force: bool = False) -> None:
    """Writes a bundle from a recipe: the dict form of the JSON/TOML recipes of ``prlimg create
    --bundle --recipe`` (``size``, ``cluster_size``, ``split_at``, ``plain_root``, ``top``,
    ``inuse``, ``snapshots`` with ``guid``, ``parent``, ``data``, ``bitmaps``); sizes may be
    numbers or strings with suffixes (``"64M"``).

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "r.hdd")
    >>> create_bundle(p, {"size": "1M", "split_at": ["512K"]})
    >>> len(Bundle.open(p).storages())
    2
    """
    _native.create_bundle(os.fspath(path), recipe, force)


class Defect(str):
    """A defect of the catalogue: its name (the string itself, as :func:`corrupt` takes it),
    the rule it breaks, what it does."""

    __slots__ = ("rule", "summary")
    rule: Rule
    summary: str

    def __new__(cls, name: str, rule: Rule, summary: str) -> "Defect":
        self = super().__new__(cls, name)
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "summary", summary)
        return self

    @property
    def name(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Defect(name={self.name!r}, rule={self.rule!r}, summary={self.summary!r})"


def defects(*, bundle: bool = False) -> List[Defect]:
    """The defects :func:`corrupt` can make (``prlimg corrupt --list``; ``--list-bundle`` with
    ``bundle``).

    >>> [d for d in defects() if d.name == "inuse-set"]
    [Defect(name='inuse-set', rule=<Rule.R7: 'R7'>, summary='sets inuse to "Ynot": the image was not closed cleanly')]
    """
    return [Defect(n, Rule(r), s) for n, r, s in _native.defects(bundle)]


def corrupt(src: StrPath, dst: StrPath, defect: str, *, seed: int = 0, force: bool = False) -> None:
    """Copies the valid image (or bundle) ``src`` to ``dst`` with one defect that breaks exactly
    one rule; ``seed`` picks among the places it can go. ``src`` is only read.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = create(os.path.join(d, "ok.hds"), size=1 << 20)
    >>> corrupt(os.path.join(d, "ok.hds"), os.path.join(d, "bad.hds"), "inuse-set")
    >>> check(os.path.join(d, "bad.hds")).rules
    [<Rule.R7: 'R7'>]
    """
    _native.corrupt(os.fspath(src), os.fspath(dst), defect, seed, force)


def mutate(
    src: Union[StrPath, Buffer],
    *,
    count: int,
    seed: int = 0,
    max_edits: int = 3,
    fix_checksum: bool = True,
) -> Iterator[Tuple[bytes, List[str]]]:
    """Variants of an image for fuzzing: for the seeds ``seed`` .. ``seed + count - 1``, the
    variant's bytes and its edits (``prlimg mutate``), made one after another in one buffer. The
    same seed always gives the same variant.

    >>> base = build(size=1 << 20, cluster_size=4096)
    >>> variants = list(mutate(base, count=3, seed=7))
    >>> len(variants), variants[0] == next(mutate(base, count=1, seed=7))
    (3, True)
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        with open(os.fspath(src), "rb") as f:
            data = f.read()
    batch = 256
    done = 0
    while done < count:
        n = min(batch, count - done)
        for variant, edits in _native.mutate_batch(data, seed + done, n, max_edits, fix_checksum):
            yield variant, list(edits)
        done += n


def convert(
    src: StrPath,
    dst: StrPath,
    *,
    format: Optional[str] = None,
    snapshot: Optional[str] = None,
    cluster_size: int = 1 << 20,
    force: bool = False,
) -> None:
    """Writes the guest data of an image or bundle (at ``snapshot``) to ``dst`` as ``"raw"``
    (sparse), ``"parallels"`` (an expanding ``.hds``) or ``"bundle"``; by default from
    ``dst``'s name, as ``prlimg convert`` picks (``.hds``, ``.hdd``, else raw).

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = create(os.path.join(d, "s.hds"), size=1 << 20, data=[(0, 3, 5)])
    >>> convert(os.path.join(d, "s.hds"), os.path.join(d, "s.raw"))
    >>> with open(os.path.join(d, "s.raw"), "rb") as f:
    ...     f.read(4), os.path.getsize(os.path.join(d, "s.raw"))
    (b'\\x05\\x05\\x05\\x00', 1048576)
    """
    if format is None:
        ext = os.path.splitext(os.fspath(dst))[1].lower()
        format = {".hds": "parallels", ".hdd": "bundle"}.get(ext, "raw")
    _native.convert(os.fspath(src), os.fspath(dst), format, snapshot, cluster_size, force)


def corrupt_bytes(data: Buffer, defect: str, *, seed: int = 0) -> bytes:
    """An image held in memory with one defect, as :func:`corrupt` makes it.

    >>> bad = corrupt_bytes(build(size=1 << 20), "bad-magic")
    >>> check(bad).rules, check(bad).qemu["outcome"]
    ([<Rule.R1: 'R1'>], 'rejects')
    """
    return bytes(_native.corrupt_bytes(bytes(data), defect, seed))


def repair(
    src: StrPath,
    dst: Optional[StrPath] = None,
    *,
    all: bool = False,
    dry_run: bool = False,
    force: bool = False,
    in_place: bool = False,
) -> Dict[str, Any]:
    """Repairs an image as ``prlimg repair`` does: into ``dst`` (refused if it exists, unless
    ``force``), or the image itself with ``in_place``; ``dry_run`` plans only. Only what loses
    no guest byte and no bitmap (leaks, an open ``inuse``), unless ``all`` (corruption too,
    each fix losing the least). Returns the plan: ``actions`` (each with its ``rule``, what it
    does, what it loses), ``before``/``after`` verdicts, ``unrepaired`` rules, ``written``.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = create(os.path.join(d, "open.hds"), size=1 << 20, inuse="Ynot")
    >>> plan = repair(os.path.join(d, "open.hds"), os.path.join(d, "fixed.hds"))
    >>> plan["before"], plan["after"], [a["rule"] for a in plan["actions"]]
    ('corrupt', 'clean', ['R7'])
    """
    out = None if dst is None else os.fspath(dst)
    plan: Dict[str, Any] = _native.repair(os.fspath(src), out, all, dry_run, force, in_place)
    return plan
