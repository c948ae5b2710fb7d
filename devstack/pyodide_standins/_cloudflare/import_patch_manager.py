"""Stand-in for workerd's import patch manager: the SDK registers, per module name, a
context manager around the module's creation or execution; this runs them when the module
is imported, through a meta path finder, as workerd does before the first request.

`block_calls` and the snapshot callbacks guard a memory snapshot, which the local host
does not take: calls are not blocked; before-first-request callbacks run when the host
calls `run_before_first_request()`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from typing import Any

_EXEC: dict[str, list[Callable[[Any], Any]]] = {}
_CREATE: dict[str, list[Callable[[Any], Any]]] = {}
_BEFORE_FIRST_REQUEST: dict[str, list[Callable[[Any], Any]]] = {}
APPLIED: list[str] = []  # module names whose patches ran, in order


def _register(table: dict[str, list[Callable[[Any], Any]]], name: str) -> Callable[[Any], Any]:
    def decorator(patch: Callable[[Any], Any]) -> Callable[[Any], Any]:
        table.setdefault(name, []).append(patch)
        return patch

    return decorator


def register_exec_patch(name: str) -> Callable[[Any], Any]:
    return _register(_EXEC, name)


def register_create_patch(name: str) -> Callable[[Any], Any]:
    return _register(_CREATE, name)


def register_before_first_request(name: str) -> Callable[[Any], Any]:
    return _register(_BEFORE_FIRST_REQUEST, name)


def register_after_snapshot(name: str) -> Callable[[Any], Any]:
    return lambda patch: patch  # no snapshot here


def block_calls(module: Any, allowlist: tuple[str, ...] = ()) -> None:
    return None  # calls are blocked only while a snapshot is built


def run_before_first_request() -> None:
    for name, callbacks in _BEFORE_FIRST_REQUEST.items():
        module = sys.modules.get(name)
        if module is not None:
            for callback in callbacks:
                callback(module)


class _PatchedLoader(importlib.abc.Loader):
    def __init__(self, name: str, loader: Any) -> None:
        self._name = name
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        create = getattr(self._loader, "create_module", None)
        patches = _CREATE.get(self._name, [])
        if not patches:
            return create(spec) if create else None
        with _nested(patches, spec):
            return create(spec) if create else None

    def exec_module(self, module: Any) -> None:
        patches = _EXEC.get(self._name, [])
        with _nested(patches, module):
            self._loader.exec_module(module)
        if patches:
            APPLIED.append(self._name)


class _nested:
    def __init__(self, patches: list[Callable[[Any], Any]], target: Any) -> None:
        self._managers = [patch(target) for patch in patches]

    def __enter__(self) -> None:
        for manager in self._managers:
            manager.__enter__()

    def __exit__(self, *exc: Any) -> None:
        for manager in reversed(self._managers):
            manager.__exit__(*exc)


class _PatchFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _EXEC and fullname not in _CREATE:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = getattr(finder, "find_spec", lambda *_: None)(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchedLoader(fullname, spec.loader)
                return spec
        return None


sys.meta_path.insert(0, _PatchFinder())
