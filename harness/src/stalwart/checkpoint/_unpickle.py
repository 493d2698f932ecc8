"""Unpickling a saved state's skeleton without running code the checkpoint chose.

A pickle is a small program: ``REDUCE`` calls whatever callable the stream names, ``BUILD`` calls
``__setstate__`` or sets attributes on whatever object is on its stack. A checkpoint can come from
another user's trial (a warm start, a registered model, a copied uuid), and a verified digest only
proves the bytes are the ones its author saved, not that the author meant well. So by default, as
``torch.load(weights_only=True)`` does, the skeleton runs on an allowlist:

- a global is looked up only if it is on the allowlist (or the caller's ``allowed_globals``); a
  module is never even imported otherwise, since importing runs code too;
- ``REDUCE``, ``NEWOBJ`` and ``INST``/``OBJ`` call only what that lookup returned;
- ``BUILD`` acts only on instances of allowed classes, never on a class itself or a restored
  tensor, and looks ``__setstate__`` up on the type, where the stream cannot plant one.

So every function the stream can make the process call is one of the allowed globals or a method
of an allowed type. Those are plain value constructors (containers, datetime, Decimal, UUID, pure
paths, torch dtypes and sizes, numpy dtypes and arrays), which build values and never call back
into anything the stream names. ``trusted=True`` loads everything, like ``torch.load`` of one's own
file, and is for checkpoints one made oneself.
"""

from __future__ import annotations

import importlib
import io
import pickle
import sys
from collections.abc import Callable, Iterable
from typing import Any, cast

from stalwart.core._errors import CheckpointCorrupted, CheckpointError

#: Globals a skeleton may name, as pickle spells them ("module.qualname").
_ALLOWED = frozenset(
    {
        *(
            f"builtins.{name}"
            for name in (
                "dict",
                "list",
                "tuple",
                "set",
                "frozenset",
                "int",
                "float",
                "complex",
                "str",
                "bytes",
                "bytearray",
                "bool",
                "slice",
                "range",
                "Ellipsis",
            )
        ),
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
        "collections.Counter",
        "datetime.date",
        "datetime.time",
        "datetime.datetime",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "uuid.UUID",
        *(
            f"{module}.{name}"
            for module in ("pathlib", "pathlib._local")  # 3.13 moved the classes to pathlib._local
            for name in ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath")
        ),
        "torch.Size",
        "torch.device",
        "torch.Generator",
        "torch._C.Generator",  # how torch.Generator pickles
        "numpy.dtype",
        "numpy.ndarray",
        # numpy 2 pickles through numpy._core, numpy 1 through numpy.core.
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.numeric._frombuffer",  # protocol 5: a contiguous array from its bytes
        "numpy.core.numeric._frombuffer",
    }
)

#: Allowed classes whose instances BUILD may fill in: their own ``__setstate__``, or (OrderedDict,
#: Counter) instance attributes such as the ``_metadata`` of a module's ``state_dict()``.
_BUILDABLE = frozenset(
    {
        "collections.OrderedDict",
        "collections.Counter",
        "uuid.UUID",
        "torch.Generator",
        "torch._C.Generator",
        "numpy.dtype",
        "numpy.ndarray",
    }
)

#: Never allowed, not even by ``allowed_globals``: each evaluates code or reaches any attribute or
#: module, which turns every other allowed name into a gadget. ``trusted=True`` is the way to load
#: a checkpoint that needs them.
_NEVER = frozenset(
    f"builtins.{name}"
    for name in (
        "eval",
        "exec",
        "compile",
        "getattr",
        "setattr",
        "delattr",
        "__import__",
        "__build_class__",
        "globals",
        "locals",
        "vars",
        "open",
        "input",
        "breakpoint",
        "type",
        "object",
    )
)

_MODULE_ALIASES = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
}


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint's saved state holds a pickled object restore does not load by default.

    Not a sign of corruption: the bytes are the ones the checkpoint's author saved, so restore
    stops instead of falling back to an older checkpoint. ``name`` is what was refused, as
    ``module.qualname``.
    """

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


def check_allowed_globals(allowed_globals: Iterable[str]) -> frozenset[str]:
    """``allowed_globals`` as a set, after refusing what could never be safe to allow."""
    if isinstance(allowed_globals, str):
        raise ValueError(f"allowed_globals takes a list of 'module.qualname' names, not {allowed_globals!r}")
    names = frozenset(allowed_globals)
    for name in names:
        if not isinstance(name, str) or "." not in name.strip("."):
            raise ValueError(f"allowed_globals: {name!r} is not a 'module.qualname' name")
        if name in _NEVER:
            raise ValueError(
                f"allowed_globals: {name} would let a pickle run any code, so restore never allows it; "
                "pass trusted=True instead, and only for checkpoints you made yourself"
            )
    return names


def _refused(uuid: str, name: str, *, allowable: bool = True) -> UnsafeCheckpointError:
    allow = f"allowed_globals=[{name!r}] or " if allowable and name not in _NEVER else ""
    return UnsafeCheckpointError(
        f"checkpoint {uuid} contains a pickled object of type {name!r}, which restore does not load "
        f"by default; pass {allow}trusted=True only for checkpoints you made yourself",
        name=name,
    )


def _name_of(obj: object) -> str:
    """``module.qualname`` of a class or function, else of its type."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not (callable(obj) and isinstance(module, str) and isinstance(qualname, str)):
        module, qualname = type(obj).__module__, type(obj).__qualname__
    return f"{module}.{qualname}"


def _import(module: str) -> Any:
    alias = _MODULE_ALIASES.get(module)
    if alias is not None:
        try:
            return importlib.import_module(alias)
        except ImportError:
            pass
    return importlib.import_module(module)


def _resolve(module: str, name: str) -> Any:
    found = _import(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


def _family_member(module: str, name: str) -> Any:
    """A torch dtype or a numpy scalar type: families too large to list, checked by what they are.

    Looked up in the module's own namespace, so a module ``__getattr__`` (which may import
    submodules) never runs.
    """
    if module == "torch":
        import torch

        value = vars(torch).get(name)
        return value if isinstance(value, torch.dtype) else None
    if module == "numpy":
        import numpy

        value = vars(numpy).get(name)
        return value if isinstance(value, type) and issubclass(value, numpy.generic) else None
    return None


def _array(arrays: dict[str, Any], pid: Any) -> Any:
    if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == "stalwart-array" and pid[1] in arrays:
        return arrays[pid[1]]
    raise CheckpointCorrupted(f"checkpoint skeleton refers to an unknown array {pid!r:.100}")


class _Unpickler(pickle._Unpickler):
    """Unpickles a skeleton on the allowlist (see the module docstring); array references come
    from the verified chunks.

    Subclasses the pure-Python unpickler because only it lets each opcode be replaced. It is several
    times slower per object than the C one, but a skeleton holds no tensor bytes, only structure.
    """

    stack: list[Any]  # the base class's working stack, created by load()

    def __init__(
        self, data: bytes, arrays: dict[str, Any], *, uuid: str = "?", allowed_globals: Iterable[str] = ()
    ) -> None:
        super().__init__(io.BytesIO(data))
        self._arrays = arrays
        self._uuid = uuid
        self._extra = check_allowed_globals(allowed_globals)
        # What lookups returned: the only things REDUCE/NEWOBJ may call and BUILD may fill in.
        self._callables: dict[int, object] = {}
        self._buildable: tuple[type, ...] = ()

    def find_class(self, module: str, name: str) -> Any:
        sys.audit("pickle.find_class", module, name)
        key = f"{module}.{name}"
        if key in self._extra or key in _ALLOWED:
            found = _resolve(module, name)
        else:
            found = _family_member(module, name)
            if found is None:
                raise _refused(self._uuid, key)
        if callable(found):
            self._callables[id(found)] = found
        if isinstance(found, type) and (key in self._extra or key in _BUILDABLE):
            self._buildable = (*self._buildable, found)
        return found

    def persistent_load(self, pid: Any) -> Any:
        return _array(self._arrays, pid)

    def get_extension(self, code: int) -> None:
        # copyreg's extension cache is process-wide and would bypass find_class; skeletons never use it.
        raise _refused(self._uuid, f"copyreg extension code {code}", allowable=False)

    def _callable(self, func: object) -> Any:
        if self._callables.get(id(func)) is not func:
            raise _refused(self._uuid, _name_of(func))
        return func

    def _class(self, cls: object) -> type:
        if not isinstance(cls, type):
            raise _refused(self._uuid, _name_of(cls))
        return cast(type, self._callable(cls))

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self._callable(self.stack[-1])
        self.stack[-1] = func(*args)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self._class(self.stack.pop())
        self.stack.append(cls.__new__(cls, *args))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self._class(self.stack.pop())
        self.stack.append(cls.__new__(cls, *args, **kwargs))

    def _instantiate(self, klass: object, args: list[Any]) -> None:  # INST and OBJ (protocols 0, 1)
        cls = self._class(klass)
        self.stack.append(cls(*args))

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, type):
            # Setting attributes on a class would change it for the whole process.
            raise UnsafeCheckpointError(
                f"checkpoint {self._uuid} sets attributes of the class {_name_of(inst)!r}, which restore "
                "never does; pass trusted=True only for checkpoints you made yourself",
                name=_name_of(inst),
            )
        if not issubclass(type(inst), self._buildable):  # not isinstance: __class__ can lie
            raise _refused(self._uuid, _name_of(type(inst)))
        setstate = getattr(type(inst), "__setstate__", None)
        if setstate is not None:
            setstate(inst, state)
            return
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        if state:
            inst.__dict__.update(state)
        for key, value in (slots or {}).items():
            setattr(inst, key, value)


_OPCODES: dict[bytes, Callable[[_Unpickler], None]] = {
    pickle.REDUCE: _Unpickler._load_reduce,
    pickle.NEWOBJ: _Unpickler._load_newobj,
    pickle.NEWOBJ_EX: _Unpickler._load_newobj_ex,
    pickle.BUILD: _Unpickler._load_build,
}
# A copy of the base table with the opcodes that call or mutate objects replaced; INST and OBJ go
# through _instantiate, EXT1/2/4 through get_extension, GLOBAL and STACK_GLOBAL through find_class.
_Unpickler.dispatch = {
    **pickle._Unpickler.dispatch,
    **{opcode[0]: cast(Any, load) for opcode, load in _OPCODES.items()},
}


class _TrustedUnpickler(pickle.Unpickler):
    """Unpickles anything, as ``torch.load(weights_only=False)`` does: for ``trusted=True``."""

    def __init__(self, data: bytes, arrays: dict[str, Any]) -> None:
        super().__init__(io.BytesIO(data))
        self._arrays = arrays

    def persistent_load(self, pid: Any) -> Any:
        return _array(self._arrays, pid)
