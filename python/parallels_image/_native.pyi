# Hand-written stubs of the native module (src/lib.rs); tests/test_stubs.py keeps them in step.
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, final


JSON_SCHEMA: int
__version__: str

class ParallelsImageError(Exception): ...

class InvalidImageError(ParallelsImageError):
    rule: str
    severity: str
    location: str
    where: Dict[str, Any]
    message: str
    path: Optional[str]

class NotParallelsError(InvalidImageError):
    found: bytes
    version: int
    expected: Tuple[bytes, bytes]

class InvalidBundleError(ParallelsImageError):
    rule: str
    severity: str
    message: str
    path: str

class BuildError(ParallelsImageError):
    path: Optional[str]

class DefectError(ParallelsImageError):
    defect: str
    needs: str
    path: Optional[str]

class OutputError(ParallelsImageError):
    path: Optional[str]

class BundleReadError(ParallelsImageError): ...

_Finding = Tuple[str, str, str, Optional[str], Optional[str], Optional[Dict[str, Any]]]
_Bitmaps = Sequence[Tuple[Any, int, Sequence[Tuple[int, int]]]]

@final
class Checked:
    @property
    def kind(self) -> str: ...
    @property
    def verdict(self) -> str: ...
    @property
    def exit_code(self) -> int: ...
    @property
    def filename(self) -> str: ...
    @property
    def lenient(self) -> bool: ...
    @property
    def statistics(self) -> Optional[Tuple[int, int, int, int]]: ...
    def findings(self) -> List[_Finding]: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class Image:
    @property
    def bat(self) -> bytes: ...
    @staticmethod
    def open(path: str, lenient: bool = ...) -> Image: ...
    @staticmethod
    def from_bytes(data: bytes, lenient: bool = ...) -> Image: ...
    def header(self) -> Dict[str, Any]: ...
    def bitmaps(self) -> List[Tuple[str, int, int, List[int]]]: ...
    def dirty_extents(self, feature: int) -> List[Tuple[int, int]]: ...
    def read(self, offset: int, length: int) -> bytes: ...

@final
class Guest:
    @staticmethod
    def open(path: str, snapshot: Optional[str] = ...) -> Guest: ...
    @property
    def size(self) -> int: ...
    @property
    def files(self) -> List[str]: ...
    def data_ranges(self) -> List[Tuple[int, int]]: ...
    def readinto_at(self, buffer: Any, offset: int) -> int: ...

@final
class Bundle:
    @staticmethod
    def open(path: str) -> Bundle: ...
    @property
    def dir(self) -> str: ...
    @property
    def descriptor_path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def top(self) -> Optional[str]: ...
    def snapshots(self) -> List[Tuple[str, str]]: ...
    def storages(self) -> List[Tuple[int, int, int, List[Tuple[str, str, str]]]]: ...
    def chain(self, snapshot: Optional[str] = ...) -> List[str]: ...
    def guest(self, snapshot: Optional[str] = ...) -> Guest: ...
    def check(self, lenient: bool = ...) -> Checked: ...

def check_path(path: str, lenient: bool = ...) -> Checked: ...
def check_buffer(data: Union[bytes, bytearray, memoryview], lenient: bool = ..., filename: str = ...) -> Checked: ...
def create(
    path: str,
    size: int,
    cluster_size: int,
    data: Sequence[Tuple[int, int, int]],
    bitmaps: _Bitmaps,
    v1: bool,
    inuse: Union[int, str, None],
    density: Optional[float],
    seed: int,
    granularity: int,
    force: bool,
) -> int: ...
def build(
    size: int,
    cluster_size: int,
    data: Sequence[Tuple[int, int, int]],
    bitmaps: _Bitmaps,
    v1: bool,
    inuse: Union[int, str, None],
    density: Optional[float],
    seed: int,
    granularity: int,
) -> bytes: ...
def create_bundle(path: str, recipe: Dict[str, Any], force: bool = ...) -> None: ...
def defects(bundle: bool = ...) -> List[Tuple[str, str, str]]: ...
def corrupt(src: str, dst: str, defect: str, seed: int = ..., force: bool = ...) -> None: ...
def corrupt_bytes(data: bytes, defect: str, seed: int = ...) -> bytes: ...
def mutate_batch(
    input: bytes, first_seed: int, count: int, max_edits: int = ..., fix_checksum: bool = ...
) -> List[Tuple[bytes, List[str]]]: ...
def convert(
    src: str,
    dst: str,
    format: str,
    snapshot: Optional[str] = ...,
    cluster_size: int = ...,
    force: bool = ...,
) -> None: ...
def rules() -> List[Tuple[str, str, str]]: ...
def repair(
    src: str,
    dst: Optional[str] = ...,
    all: bool = ...,
    dry_run: bool = ...,
    force: bool = ...,
    in_place: bool = ...,
) -> Dict[str, Any]: ...
