"""The hand-written stubs (parallels_image/_native.pyi) against the native module they describe:
the same public names at the top and in each class, and for every function and method the
same parameters, in the same order, with defaults in the same places. mypy --strict checks the
package against the stubs; this test checks the stubs against the module."""

from __future__ import annotations

import ast
import inspect
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Set, Tuple

import pytest

import parallels_image._native as native

# The stubs installed beside the module (the wheel ships them), else the source tree's.
_installed = Path(native.__file__ or ".").with_name("_native.pyi")
STUBS = _installed if _installed.exists() else Path(__file__).resolve().parents[1] / "parallels_image" / "_native.pyi"

# (name, has a default) of each parameter, `self` left out.
Params = List[Tuple[str, bool]]


def stub_tree() -> ast.Module:
    return ast.parse(STUBS.read_text(), filename=str(STUBS))


def params_of(f: ast.FunctionDef) -> Params:
    a = f.args
    positional = a.posonlyargs + a.args
    first_default = len(positional) - len(a.defaults)
    out = [(p.arg, i >= first_default) for i, p in enumerate(positional)]
    out += [(p.arg, d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return [p for p in out if p[0] != "self"]


def public(names: List[str]) -> List[str]:
    return sorted(n for n in names if not n.startswith("_"))


def stub_top() -> Tuple[Dict[str, ast.FunctionDef], Dict[str, ast.ClassDef], List[str]]:
    funcs: Dict[str, ast.FunctionDef] = {}
    classes: Dict[str, ast.ClassDef] = {}
    values: List[str] = []
    for node in stub_tree().body:
        if isinstance(node, ast.FunctionDef):
            funcs[node.name] = node
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            values.append(node.target.id)
    return funcs, classes, values


def runtime_params(obj: object) -> Params:
    sig = inspect.signature(obj)  # type: ignore[arg-type]
    return [
        (p.name, p.default is not inspect.Parameter.empty)
        for p in sig.parameters.values()
        if p.name != "self"
    ]


def test_the_stubs_name_every_public_name_of_the_module_and_no_other() -> None:
    funcs, classes, values = stub_top()
    assert public(list(funcs) + list(classes) + values) == public(dir(native))


def test_each_stub_class_has_the_members_of_the_class() -> None:
    _, classes, _ = stub_top()
    for name, node in classes.items():
        cls = getattr(native, name)
        if issubclass(cls, BaseException):
            continue  # their attributes are set on each instance: the test below
        members = [n.name for n in node.body if isinstance(n, ast.FunctionDef)]
        own = [m for m in dir(cls) if m not in dir(object)]
        assert public(members) == public(own), name


def test_each_function_and_method_takes_the_parameters_its_stub_names() -> None:
    funcs, classes, _ = stub_top()
    checked = 0
    for name, f in funcs.items():
        assert params_of(f) == runtime_params(getattr(native, name)), name
        checked += 1
    for cname, node in classes.items():
        for m in node.body:
            if not isinstance(m, ast.FunctionDef):
                continue
            if any(isinstance(d, ast.Name) and d.id == "property" for d in m.decorator_list):
                continue
            attr = getattr(getattr(native, cname), m.name)
            assert params_of(m) == runtime_params(attr), f"{cname}.{m.name}"
            checked += 1
    # The stubs were read: the module has 13 functions and its classes over 20 methods.
    assert checked >= 30


def annotated(classes: Dict[str, ast.ClassDef], name: str) -> Set[str]:
    """The attributes the stubs give class `name`, its stub bases' with them."""
    node = classes[name]
    out = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    for b in node.bases:
        if isinstance(b, ast.Name) and b.id in classes:
            out |= annotated(classes, b.id)
    return out


def empty_image() -> bytes:
    return native.build(1 << 20, 1 << 20, [], [], False, None, None, 0, 0)


# The raisers below work in a scratch folder that is removed when they raise.


def bad_bundle() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        d = Path(scratch) / "a.hdd"
        d.mkdir()
        (d / "DiskDescriptor.xml").write_text("<x/>")
        native.Bundle.open(str(d))


def existing_output() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        f = Path(scratch) / "x.hds"
        f.write_bytes(b"")
        native.create(str(f), 1 << 20, 1 << 20, [], [], False, None, None, 0, 0, False)


def unknown_bundle_defect() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        d = Path(scratch)
        native.create_bundle(str(d / "a.hdd"), {"size": "4M"})
        native.corrupt(str(d / "a.hdd"), str(d / "b.hdd"), "no-such-defect")


# Each exception the module raises, by a call that raises it, and the class it must be.
RAISERS: List[Tuple[str, Callable[[], object]]] = [
    ("NotParallelsError", lambda: native.Image.from_bytes(b"x" * 100)),
    ("NotParallelsError", lambda: native.check_buffer(b"")),
    ("NotParallelsError", lambda: native.Image.from_bytes(b"")),
    ("InvalidImageError", lambda: native.Image.from_bytes(b"WithoutFreeSpace" + bytes(200))),
    ("InvalidBundleError", bad_bundle),
    ("BuildError", lambda: native.build(1 << 20, 3, [], [], False, None, None, 0, 0)),
    ("DefectError", lambda: native.corrupt_bytes(empty_image(), "v1-size-high-bits")),
    ("DefectError", lambda: native.corrupt_bytes(empty_image(), "no-such-defect")),
    ("DefectError", unknown_bundle_defect),
    ("OutputError", existing_output),
]


@pytest.mark.parametrize("cls,call", RAISERS)
def test_each_exception_carries_exactly_the_attributes_its_stub_names(cls: str, call: Callable[[], object]) -> None:
    _, classes, _ = stub_top()
    with pytest.raises(native.ParallelsImageError) as e:
        call()
    assert type(e.value).__name__ == cls
    assert set(vars(e.value)) == annotated(classes, cls)


def test_every_exception_class_of_the_stubs_is_raised_above() -> None:
    _, classes, _ = stub_top()
    leaves = {n for n in classes if issubclass(getattr(native, n), BaseException)} - {
        "ParallelsImageError",  # the base: each error is one of its subclasses
        "BundleReadError",  # raised by Guest.read on a bundle's file gone bad: tests/test_guest.py
    }
    assert leaves == {c for c, _ in RAISERS}
