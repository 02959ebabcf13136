"""The weights of a TorchScript archive -- OpenAI's CLIP files as the ``clip`` package caches them -- read without
TorchScript, which newer torch deprecates.

The archive is a zip: ``<name>/data.pkl`` pickles the module tree (objects of ``__torch__.*`` classes whose state
is a dict of attributes: submodules, tensors, plain values), each tensor's bytes are ``<name>/data/<key>``, and
``<name>/code/__torch__/...py`` declares every class with ``__parameters__ = [...]`` and ``__buffers__ = [...]``.
The state dict is what ``torch.jit.load(path).state_dict()`` gives: per module its parameters, then its buffers,
then its submodules' entries under ``<attribute>.``; tensor attributes that are neither (OpenAI's ``attn_mask``)
are left out, as TorchScript leaves them out.

The unpickler builds only what such an archive holds -- ``__torch__`` objects as plain attribute holders, tensors
from their storages, ``collections.OrderedDict`` -- and refuses any other global, so reading a file never runs
code from it.
"""
from __future__ import annotations

import ast
import collections
import functools
import pickle
import re
import zipfile
from pathlib import PurePosixPath

import torch

STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                  "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                  "BoolStorage": torch.bool}
CLASS_LINE = re.compile(r"^class (\w+)\(")
DECLARATION = re.compile(r"^\s+(__parameters__|__buffers__) = (\[.*\])\s*$")


class ArchiveError(ValueError):
    """The file is not a TorchScript archive of module weights this reader understands."""


class ScriptObject:
    """A ``__torch__`` object of the pickle: its class name and its attributes, nothing callable. Each class of the
    archive becomes a subclass naming it (``script_class``), since the pickle creates objects from their class."""

    qualified_name = "__torch__"

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise ArchiveError(f"object of {self.qualified_name} has state of type {type(state).__name__}")
        self.attributes = state


@functools.lru_cache(maxsize=None)
def script_class(qualified_name: str) -> type:
    return type(qualified_name.rsplit(".", 1)[-1], (ScriptObject,), {"qualified_name": qualified_name})


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The archive's module weights by their state-dict names (see the module docstring)."""
    with zipfile.ZipFile(path) as archive:
        prefix = archive_prefix(archive)
        declared = declarations(archive, prefix)
        root = ArchiveUnpickler(archive, prefix).load()
    if not isinstance(root, ScriptObject):
        raise ArchiveError(f"data.pkl holds {type(root).__name__}, expected a TorchScript module")
    return dict(module_state(root, declared))


def archive_prefix(archive: zipfile.ZipFile) -> str:
    """The archive's top folder (``ViT-B-16/``), found by its ``data.pkl``."""
    for name in archive.namelist():
        path = PurePosixPath(name)
        if path.name == "data.pkl" and len(path.parts) == 2:
            return f"{path.parts[0]}/"
    raise ArchiveError("no <name>/data.pkl in the archive")


def declarations(archive: zipfile.ZipFile, prefix: str) -> dict[str, dict[str, list[str]]]:
    """``__torch__.a.b.Class`` -> {"__parameters__": [...], "__buffers__": [...]} from the archive's code files."""
    found: dict[str, dict[str, list[str]]] = {}
    code = f"{prefix}code/"
    for name in archive.namelist():
        if name.startswith(code) and name.endswith(".py"):
            module = name[len(code):-len(".py")].replace("/", ".")
            _declared_in(archive.read(name).decode("utf-8"), module, found)
    return found


def _declared_in(source: str, module: str, found: dict) -> None:
    current = None
    for line in source.splitlines():
        header, declaration = CLASS_LINE.match(line), DECLARATION.match(line)
        if header:
            current = found.setdefault(f"{module}.{header.group(1)}", {})
        elif declaration and current is not None:
            current[declaration.group(1)] = [str(n) for n in ast.literal_eval(declaration.group(2))]


class ArchiveUnpickler(pickle.Unpickler):
    """``data.pkl`` with storages read from the archive and only the globals such a file uses."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str):
        super().__init__(archive.open(f"{prefix}data.pkl"))
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return script_class(f"{module}.{name}")
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in REBUILDERS:
            return REBUILDERS[name]
        raise ArchiveError(f"data.pkl refers to {module}.{name}, which a weights archive does not hold")

    def persistent_load(self, pid):
        """``("storage", dtype, key, location, numel)`` -> (the storage's bytes, its dtype)."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ArchiveError(f"unexpected persistent id {pid!r:.80}")
        _, dtype, key, _, _ = pid
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            empty = torch.empty(0, dtype=torch.uint8)  # frombuffer refuses a buffer of no bytes
            self.storages[key] = torch.frombuffer(data, dtype=torch.uint8) if data else empty
        return self.storages[key], dtype


def _rebuild_tensor(storage, offset: int, size, stride, *_) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` without torch's private helpers: a view of the storage's bytes."""
    raw, dtype = storage
    return torch.empty(0, dtype=dtype).set_(raw.untyped_storage(), offset, torch.Size(size), tuple(stride))


def _rebuild_parameter(data, *_) -> torch.Tensor:
    return data


REBUILDERS = {"_rebuild_tensor_v2": _rebuild_tensor, "_rebuild_tensor": _rebuild_tensor,
              "_rebuild_parameter": _rebuild_parameter}


def module_state(obj: ScriptObject, declared: dict, prefix: str = ""):
    """(name, tensor) in ``state_dict`` order: parameters, buffers, then each submodule's, depth first."""
    kinds = declared.get(obj.qualified_name)
    if kinds is None:
        raise ArchiveError(f"no declaration of {obj.qualified_name} in the archive's code")
    for name in [*kinds.get("__parameters__", []), *kinds.get("__buffers__", [])]:
        value = getattr(obj, "attributes", {}).get(name)
        if isinstance(value, torch.Tensor):
            yield f"{prefix}{name}", value
    for name, value in getattr(obj, "attributes", {}).items():
        if isinstance(value, ScriptObject):
            yield from module_state(value, declared, f"{prefix}{name}.")
