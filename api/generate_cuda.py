#!/usr/bin/env python3
"""Generates Flyt's CUDA driver API tables from api/cuda.toml.

Run by CMake at build time (api/CMakeLists.txt); everything it writes lands in the build tree:

  flyt/api/cu_methods.hpp      namespace flyt::api::cu: enum class Method (the wire's method ids),
                               the method table, handle kinds, X-macros
  flyt/api/cu_specs.hpp        per generated function: its argument codec tags (client and worker)
  flyt/api/cu_driver_table.hpp the worker's table of the real driver's functions (every export of
                               the driver that the toolkit's cuda.h declares), and its loader list
  flyt/api/cu_errors.inc       X(name, value, description) of every CUresult of cuda.h
  cu_client_stubs.cpp          the exported one-line stubs of implemented generated functions
  cu_unsupported_stubs.cpp     a stub for every other export: logs once, CUDA_ERROR_NOT_SUPPORTED
  cu_procs.inc                 cuGetProcAddress's table: (name, version, per-thread) -> export
  cu_serve.inc                 the worker's handler of every generated function: decode, validate,
                               translate handles, charge the quota, call, record, encode
  libcuda.map                  the version script of libcuda.so.1: exactly the driver's exports

Inputs:
  api/cuda.toml                the functions Flyt forwards and their arguments' roles (its top)
  api/libcuda-exports.txt      the driver's export set, one name a line (CUDA 13 / driver 580)
  the CUDA headers             cuda.h (as NVIDIA builds its driver, __CUDA_API_VERSION_INTERNAL,
                               so that every export has its own declaration), cudaProfiler.h, and
                               cudaTypedefs.h, whose PFN_<name>_v<version> typedefs say which
                               export cuGetProcAddress answers for a name and a version

A bad input is reported as `generate_cuda.py: error: <file>: '<entry>': <what>` and exit status 1.
With --check only the TOML file and the exports list are validated (no headers, no outputs).
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import sys
import tomllib

from cdecl import IDENT, InputError, Prototype, canonical_type, extract_declarations, fail, is_pointer, preprocess

KINDS = ("sync", "async", "local", "cached")
HANDLERS = ("generated", "worker", "client", "custom")
DIRECTIONS = ("in", "out", "inout")
ENTRY_KEYS = {"name", "id", "kind", "handler", "implemented", "also", "args", "note", "internal",
              "synchronizes", "stream_idle", "capture", "cache_group", "invalidates", "idempotent"}
STREAM_IDLE = ("query", "after")
CAPTURE = ("begin", "end", "query")
ARG_KEYS = {"name", "type", "dir", "size", "role", "bytes", "op", "why"}
HANDLE_KEYS = {"type", "kind", "mapped", "accepts", "note"}
PROC_KEYS = {"name", "version", "export"}
PER_THREAD_SUFFIXES = ("_ptds", "_ptsz")
# Roles of a CUdeviceptr argument (see the top of cuda.toml).
DEVICE_ROLES = ("device", "alloc", "free", "address", "unchecked")
HANDLE_OPS = ("use", "create", "destroy", "lookup")

PROBE_INTERNAL = "#define __CUDA_API_VERSION_INTERNAL 1\n#include <cuda.h>\n#include <cudaProfiler.h>\n"
PROBE_PUBLIC = "#define CUDA_ENABLE_DEPRECATED 1\n#include <cuda.h>\n#include <cudaProfiler.h>\n"


# ---------------------------------------------------------------------------------------------
# Inputs

@dataclasses.dataclass
class Arg:
    name: str
    type: str
    dir: str
    size: str | None
    role: str | None
    bytes: str | None
    op: str | None
    why: str | None


@dataclasses.dataclass
class Entry:
    name: str
    id: int
    kind: str
    handler: str
    implemented: bool
    also: list[str]
    args: list[Arg]
    internal: bool
    synchronizes: bool
    stream_idle: str | None
    capture: str | None = None
    cache_group: str | None = None
    invalidates: list[str] = dataclasses.field(default_factory=list)
    idempotent: bool = False


@dataclasses.dataclass
class Handle:
    type: str
    kind: str
    mapped: bool
    accepts: list[str]


@dataclasses.dataclass
class Api:
    entries: list[Entry]
    handles: dict[str, Handle]          # by C type
    procs: list[tuple[str, int, str]]   # extra cuGetProcAddress rows (name, version, export)


def pointee(c_type: str) -> str:
    text = canonical_type(c_type)
    assert text.endswith("*"), c_type
    return text[:-1].strip()


def parse_arg(where: str, raw: object, index: int) -> Arg:
    if not isinstance(raw, dict):
        raise fail(where, f"argument #{index + 1} is not a table")
    unknown = set(raw) - ARG_KEYS
    if unknown:
        raise fail(where, f"argument #{index + 1}: unknown key(s) {sorted(unknown)}")
    for key in ("name", "type"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise fail(where, f"argument #{index + 1}: '{key}' must be a non-empty string")
    for key in ("size", "role", "bytes", "op", "why"):
        if key in raw and not isinstance(raw[key], str):
            raise fail(where, f"argument '{raw['name']}': '{key}' must be a string")
    name = raw["name"]
    if not IDENT.match(name):
        raise fail(where, f"argument '{name}' is not a C identifier")
    direction = raw.get("dir", "in")
    if direction not in DIRECTIONS:
        raise fail(where, f"argument '{name}': unknown direction '{direction}' (expected one of "
                          f"{', '.join(DIRECTIONS)})")
    arg = Arg(name, raw["type"], direction, raw.get("size"), raw.get("role"), raw.get("bytes"),
              raw.get("op"), raw.get("why"))
    if direction != "in" and not is_pointer(arg.type):
        raise fail(where, f"argument '{name}': direction '{direction}' needs a pointer type")
    if arg.size is not None and not is_pointer(arg.type):
        raise fail(where, f"argument '{name}': a size rule needs a pointer type, not '{arg.type}'")
    if arg.op is not None and arg.op not in HANDLE_OPS:
        raise fail(where, f"argument '{name}': unknown op '{arg.op}' (expected one of {', '.join(HANDLE_OPS)})")
    return arg


def parse_entry(path: str, raw: dict) -> Entry:
    name = raw.get("name")
    if not isinstance(name, str) or not IDENT.match(name):
        raise fail(path, f"an entry has no valid 'name' (got {name!r})")
    where = f"{path}: '{name}'"
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}")
    entry_id = raw.get("id")
    if not isinstance(entry_id, int) or isinstance(entry_id, bool) or not 1 <= entry_id < 2**32:
        raise InputError(f"{where}: 'id' must be an integer from 1 to 2^32-1 (got {entry_id!r})")
    kind, handler = raw.get("kind"), raw.get("handler")
    if kind not in KINDS:
        raise InputError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    if handler not in HANDLERS:
        raise InputError(f"{where}: unknown handler {handler!r} (expected one of {', '.join(HANDLERS)})")
    if kind == "local" and handler != "custom":
        raise InputError(f"{where}: a 'local' function is answered by hand-written client code; its "
                         "handler must be 'custom'")
    implemented = raw.get("implemented", False)
    internal = raw.get("internal", False)
    synchronizes = raw.get("synchronizes", False)
    for key, value in (("implemented", implemented), ("internal", internal), ("synchronizes", synchronizes)):
        if not isinstance(value, bool):
            raise InputError(f"{where}: '{key}' must be true or false")
    also = raw.get("also", [])
    if not isinstance(also, list) or not all(isinstance(a, str) and IDENT.match(a) for a in also):
        raise InputError(f"{where}: 'also' must be an array of export names")
    raw_args = raw.get("args", [])
    if not isinstance(raw_args, list):
        raise InputError(f"{where}: 'args' must be an array of tables")
    args = [parse_arg(where, a, i) for i, a in enumerate(raw_args)]
    seen: set[str] = set()
    for arg in args:
        if arg.name in seen:
            raise InputError(f"{where}: argument '{arg.name}' appears twice")
        seen.add(arg.name)
    stream_idle = raw.get("stream_idle")
    if stream_idle is not None and (stream_idle not in STREAM_IDLE or
                                    not any(canonical_type(a.type) == "CUstream" for a in args)):
        raise InputError(f"{where}: 'stream_idle' is one of {', '.join(STREAM_IDLE)}, for a function of a stream")
    capture = raw.get("capture")
    if capture is not None and (capture not in CAPTURE or
                                not any(canonical_type(a.type) == "CUstream" for a in args)):
        raise InputError(f"{where}: 'capture' is one of {', '.join(CAPTURE)}, for a function of a stream")
    if capture == "query" and not any(canonical_type(a.type) == "CUstreamCaptureStatus*" for a in args):
        raise InputError(f"{where}: a 'capture' query answers a CUstreamCaptureStatus* argument")
    cache_group = raw.get("cache_group")
    if cache_group is not None and (kind != "cached" or not isinstance(cache_group, str) or not IDENT.match(cache_group)):
        raise InputError(f"{where}: 'cache_group' names a group of a 'cached' function (an identifier)")
    invalidates = raw.get("invalidates", [])
    if not isinstance(invalidates, list) or not all(isinstance(g, str) and IDENT.match(g) for g in invalidates):
        raise InputError(f"{where}: 'invalidates' must be an array of cache group names")
    idempotent = raw.get("idempotent", False)
    if not isinstance(idempotent, bool) or (idempotent and (kind != "sync" or handler != "generated" or
                                                            any(a.dir != "in" for a in args))):
        raise InputError(f"{where}: 'idempotent' is for a generated 'sync' setter with in-arguments only")
    return Entry(name, entry_id, kind, handler, implemented, also, args, internal, synchronizes, stream_idle,
                 capture, cache_group, invalidates, idempotent)


def load_api(path: pathlib.Path) -> Api:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML: {error}") from None
    unknown = set(data) - {"fn", "retired_ids", "handle", "proc"}
    if unknown:
        raise InputError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    retired = data.get("retired_ids", [])
    if not isinstance(retired, list) or not all(isinstance(i, int) for i in retired):
        raise InputError(f"{path}: 'retired_ids' must be an array of integers")
    handles: dict[str, Handle] = {}
    for raw in data.get("handle", []):
        unknown = set(raw) - HANDLE_KEYS
        if unknown or not isinstance(raw.get("type"), str) or not isinstance(raw.get("kind"), str):
            raise InputError(f"{path}: every [[handle]] needs 'type' and 'kind' strings (unknown keys: "
                             f"{sorted(unknown)})")
        handle = Handle(canonical_type(raw["type"]), raw["kind"], raw.get("mapped", True), raw.get("accepts", []))
        if not IDENT.match(handle.kind):
            raise InputError(f"{path}: handle kind {handle.kind!r} is not an identifier")
        handles[handle.type] = handle
    kinds = {h.kind for h in handles.values()}
    for handle in handles.values():
        for other in handle.accepts:
            if other not in kinds:
                raise InputError(f"{path}: handle '{handle.kind}' accepts unknown kind '{other}'")
    procs = []
    for raw in data.get("proc", []):
        if set(raw) - PROC_KEYS or not isinstance(raw.get("name"), str) or not isinstance(raw.get("version"), int):
            raise InputError(f"{path}: every [[proc]] needs 'name' (string), 'version' (integer), "
                             "and optionally 'export'")
        procs.append((raw["name"], raw["version"], raw.get("export", raw["name"])))
    entries = [parse_entry(str(path), raw) for raw in data.get("fn", [])]
    names: dict[str, Entry] = {}
    ids: dict[int, Entry] = {}
    for entry in entries:
        where = f"{path}: '{entry.name}'"
        for name in [entry.name] + entry.also:
            if name in names:
                raise InputError(f"{where}: '{name}' is listed twice (also by '{names[name].name}')")
            names[name] = entry
        if entry.id in ids:
            raise InputError(f"{where}: duplicate id {entry.id}, also used by '{ids[entry.id].name}'")
        if entry.id in retired:
            raise InputError(f"{where}: id {entry.id} is retired and may never be used again")
        ids[entry.id] = entry
        check_roles(where, entry, handles)
    groups = {e.cache_group for e in entries if e.cache_group}
    for entry in entries:
        for group in entry.invalidates:
            if group not in groups:
                raise InputError(f"{path}: '{entry.name}' invalidates cache group '{group}', which no function has")
    return Api(entries, handles, procs)


EXPR_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_]\w*)|(.))")


def parse_expression(where: str, text: str, arg_names: set[str]) -> str:
    """A size expression over the function's arguments (names, integers, + - * and parentheses)
    as C++ with saturating arithmetic, so that no client value can wrap a range around."""
    tokens = [m.groups() for m in EXPR_TOKEN.finditer(text) if any(m.groups())]
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else (None, None, None)

    def atom() -> str:
        nonlocal pos
        number, name, symbol = peek()
        pos += 1
        if number:
            return f"std::uint64_t{{{number}}}"
        if name:
            if name not in arg_names:
                raise fail(where, f"size expression '{text}' names '{name}', which is no argument")
            return f"static_cast<std::uint64_t>({name})"
        if symbol == "(":
            inner = additive()
            if peek()[2] != ")":
                raise fail(where, f"size expression '{text}': missing ')'")
            pos += 1
            return inner
        raise fail(where, f"size expression '{text}' is not understood")

    def product() -> str:
        nonlocal pos
        left = atom()
        while peek()[2] == "*":
            pos += 1
            left = f"::flyt::api::satMul({left}, {atom()})"
        return left

    def additive() -> str:
        nonlocal pos
        left = product()
        while peek()[2] in ("+", "-"):
            op = peek()[2]
            pos += 1
            left = f"::flyt::api::{'satAdd' if op == '+' else 'satSub'}({left}, {product()})"
        return left

    result = additive()
    if pos != len(tokens):
        raise fail(where, f"size expression '{text}' has trailing text")
    return result


def check_roles(where: str, entry: Entry, handles: dict[str, Handle]) -> None:
    names = {a.name for a in entry.args}
    for arg in entry.args:
        base = canonical_type(arg.type)
        target = pointee(base) if arg.dir != "in" else base
        if arg.size is not None:
            rule = arg.size
            match = re.fullmatch(r"([A-Za-z_]\w*)(\s*\*\s*sizeof)?", rule)
            if rule not in ("sizeof", "cstring") and not (match and match.group(1) in names):
                raise fail(where, f"argument '{arg.name}': size rule '{rule}' is not \"sizeof\", "
                                  "\"cstring\", \"<argument>\" or \"<argument> * sizeof\"")
        if target.rstrip() in ("CUdeviceptr", "CUdeviceptr_v2"):
            if entry.handler != "custom" and arg.role is None:
                raise fail(where, f"argument '{arg.name}' is a device address without a role: say "
                                  f"which ({', '.join(DEVICE_ROLES)}), so that the worker checks it")
        if arg.role is not None:
            if arg.role not in DEVICE_ROLES:
                raise fail(where, f"argument '{arg.name}': unknown role '{arg.role}' (expected one of "
                                  f"{', '.join(DEVICE_ROLES)})")
            if arg.role in ("device", "alloc") and arg.bytes is None:
                raise fail(where, f"argument '{arg.name}': role '{arg.role}' needs 'bytes'")
            if arg.role == "unchecked" and not arg.why:
                raise fail(where, f"argument '{arg.name}': role 'unchecked' needs 'why'")
            if arg.role == "alloc" and arg.dir != "out":
                raise fail(where, f"argument '{arg.name}': role 'alloc' is an out-argument")
            if arg.role in ("device", "free", "address") and arg.dir != "in":
                raise fail(where, f"argument '{arg.name}': role '{arg.role}' is an in-argument")
        if arg.bytes is not None:
            parse_expression(f"{where}: argument '{arg.name}'", arg.bytes, names)
        if entry.handler != "custom":
            if arg.dir != "in" and arg.size is None:
                raise fail(where, f"argument '{arg.name}' is '{arg.dir}' but has no size rule; a generated "
                                  "handler cannot marshal it")
            if arg.dir == "in" and is_pointer(base) and arg.size is None and base not in handles:
                raise fail(where, f"argument '{arg.name}' is a host pointer ('{arg.type}') without a size "
                                  "rule; a generated handler cannot marshal it")
            if arg.size not in (None, "sizeof", "cstring"):
                raise fail(where, f"argument '{arg.name}': size rule '{arg.size}' is not supported by "
                                  "generated handlers yet; make the function custom")
            if target in handles and arg.dir != "in" and arg.op is None:
                raise fail(where, f"argument '{arg.name}' returns a {handles[target].kind}: say whether "
                                  "it is created (op = \"create\") or an existing one (op = \"lookup\")")


def load_exports(path: pathlib.Path) -> list[str]:
    names = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not IDENT.match(line):
            raise InputError(f"{path}:{number}: expected an export name, got {line!r}")
        names.append(line)
    if len(set(names)) != len(names):
        raise InputError(f"{path}: a name is listed twice")
    return names


def check_exports(api_path: str, api: Api, exports: list[str]) -> None:
    exported = set(exports)
    for entry in api.entries:
        for name in ([] if entry.internal else [entry.name]) + entry.also:
            if name not in exported:
                raise InputError(f"{api_path}: '{name}' is not exported by NVIDIA's driver")
        if entry.internal and not entry.name.startswith("flyt"):
            raise InputError(f"{api_path}: '{entry.name}': internal methods are named flyt*")


def check_against_headers(api_path: str, api: Api, protos: dict[str, Prototype]) -> None:
    for entry in api.entries:
        if entry.internal:
            continue
        where = f"{api_path}: '{entry.name}'"
        proto = protos.get(entry.name)
        if proto is None:
            raise InputError(f"{where}: no declaration in cuda.h")
        if len(entry.args) != len(proto.params):
            raise InputError(f"{where}: {len(entry.args)} argument(s), cuda.h declares {len(proto.params)}")
        for arg, param in zip(entry.args, proto.params):
            if canonical_type(arg.type) != param.type or (param.name and param.name != arg.name):
                raise InputError(f"{where}: argument '{arg.name}' is '{arg.type}', cuda.h declares "
                                 f"'{param.type} {param.name or ''}'")
        for other in entry.also:
            alias = protos.get(other)
            if alias is None or [p.type for p in alias.params] != [p.type for p in proto.params]:
                raise InputError(f"{where}: 'also' export '{other}' does not have the same prototype")


def proc_table(typedefs: str, exports: list[str], extra: list[tuple[str, int, str]]) -> list[tuple[str, int, bool, str]]:
    """(name, version, per-thread, export) for every PFN_<name>_v<version>[_ptds|_ptsz] typedef of
    cudaTypedefs.h: the k-th version of a name (ascending) is exported as name, name_v2, name_v3, ...;
    a per-thread typedef is the export of the newest plain version not newer than it, plus its
    suffix. Checked against the export list, plus the [[proc]] rows of cuda.toml for exports that
    cudaTypedefs.h has no typedef for."""
    found = re.findall(r"typedef\s+CUresult\s+\(CUDAAPI\s+\*PFN_(\w+?)_v(\d+)(_ptds|_ptsz)?\)", typedefs)
    versions: dict[str, list[tuple[int, str]]] = {}
    for name, version, suffix in found:
        versions.setdefault(name, []).append((int(version), suffix))
    exported = set(exports)
    rows = []
    for name, listed in versions.items():
        plain = sorted({v for v, s in listed if not s})
        export_of = {v: (name if i == 0 else f"{name}_v{i + 1}") for i, v in enumerate(plain)}
        for version, suffix in sorted(set(listed)):
            if suffix:
                older = [v for v in plain if v <= version]
                export = (export_of[max(older)] if older else name) + suffix
            else:
                export = export_of[version]
            if export not in exported:
                raise InputError(f"cudaTypedefs.h: PFN_{name}_v{version}{suffix} names '{export}', which the "
                                 "driver does not export")
            rows.append((name, version, bool(suffix), export))
    covered = {r[3] for r in rows}
    for name, version, export in extra:
        if export not in exported:
            raise InputError(f"cuda.toml: [[proc]] '{name}' names '{export}', which the driver does not export")
        rows.append((name, version, export.endswith(PER_THREAD_SUFFIXES), export))
        covered.add(export)
    missing = sorted(set(exports) - covered)
    if missing:
        raise InputError(f"cuda.toml: exports that cuGetProcAddress could not find (no PFN typedef in "
                         f"cudaTypedefs.h): {', '.join(missing)}; add a [[proc]] row for each")
    return sorted(rows)


# ---------------------------------------------------------------------------------------------
# Outputs

def banner(comment: str) -> str:
    return (f"{comment} Generated from api/cuda.toml by api/generate_cuda.py. Do not edit: change the "
            f"TOML or the generator.\n")


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def handle_of(api: Api, arg: Arg) -> Handle | None:
    base = canonical_type(arg.type)
    return api.handles.get(pointee(base) if arg.dir != "in" else base)


def render_methods(api: Api) -> str:
    ordered = sorted(api.entries, key=lambda e: e.id)
    limit = ordered[-1].id + 1 if ordered else 1
    rows = {e.id: e for e in ordered}
    table = []
    for i in range(limit):
        e = rows.get(i)
        if e is None:
            table.append("    MethodInfo{},  // no method has this id\n")
        else:
            table.append(f'    MethodInfo{{"{e.name}", Method::{e.name}, Kind::{cap(e.kind)}, '
                         f"Handler::{cap(e.handler)}, {str(e.implemented).lower()}, "
                         f"{str(e.synchronizes).lower()}}},\n")
    enumerators = "".join(f"  {e.name} = {e.id},\n" for e in ordered)
    kinds = sorted({h.kind for h in api.handles.values()})
    kind_enum = "".join(f"  {k},\n" for k in kinds)
    kind_names = "".join(f'    case HandleKind::{k}: return "{k}";\n' for k in kinds)
    mapped = "".join(f"    case HandleKind::{h.kind}: return {str(h.mapped).lower()};\n"
                     for h in sorted(api.handles.values(), key=lambda h: h.kind))
    x_rows = "".join(f"  X({e.name}, {e.id}, {cap(e.kind)}, {cap(e.handler)}) \\\n" for e in ordered)
    impl_rows = "".join(f"  X({e.name}, {e.id}, {cap(e.kind)}, {cap(e.handler)}) \\\n"
                        for e in ordered if e.implemented)
    groups: dict[str, list[str]] = {}
    for e in ordered:
        if e.cache_group:
            groups.setdefault(e.cache_group, []).append(e.name)
    cache_groups = "".join(
        f"inline constexpr std::array<Method, {len(members)}> kCacheGroup_{group}{{{{"
        + ", ".join(f"Method::{m}" for m in members) + "}};\n"
        for group, members in sorted(groups.items()))
    return f"""{banner('//')}//
// The CUDA driver functions Flyt forwards: method ids (the wire's method numbers of driver
// sessions), kinds and handlers, and the kinds of handle the worker keeps per session. Ids are
// stable and only ever appended (api/cuda.toml).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace flyt::api::cu {{

// How a call travels: waited for, batched, answered on the client, or fetched once and cached.
enum class Kind : std::uint8_t {{ Sync, Async, Local, Cached }};
// Generated (client stub and worker handler made from the argument roles), Worker (client stub
// generated, the worker's handler hand-written), Client (the client's side hand-written, the
// worker's handler generated) or Custom (hand-written on both sides).
enum class Handler : std::uint8_t {{ Generated, Worker, Client, Custom }};

enum class Method : std::uint32_t {{
{enumerators}}};

struct MethodInfo {{
  std::string_view name;  // empty where no method has the id
  Method method{{}};
  Kind kind{{}};
  Handler handler{{}};
  bool implemented{{}};   // false: the library exports an "unsupported" stub instead
  bool synchronizes{{}};  // waits for the device: reports the errors of earlier batched calls
}};

inline constexpr std::uint32_t kMethodIdLimit = {limit};
inline constexpr std::size_t kMethodCount = {len(ordered)};

inline constexpr std::array<MethodInfo, kMethodIdLimit> kMethods{{{{
{''.join(table)}}}}};

[[nodiscard]] constexpr const MethodInfo* methodInfo(std::uint32_t id) noexcept {{
  return id < kMethodIdLimit && !kMethods[id].name.empty() ? &kMethods[id] : nullptr;
}}
[[nodiscard]] constexpr const MethodInfo& methodInfo(Method method) noexcept {{
  return kMethods[static_cast<std::uint32_t>(method)];
}}

// The cached functions of each cache group (api/cuda.toml `cache_group`): what a call that changes
// their answers (`invalidates`) makes the client forget.
{cache_groups}
// What a handle names. A mapped kind travels as an id that the worker's per-session table maps to
// the real handle; an unmapped one (texture and surface objects, which kernels read) is the real
// value, checked against the session's own.
enum class HandleKind : std::uint8_t {{
{kind_enum}}};

[[nodiscard]] constexpr std::string_view name(HandleKind kind) noexcept {{
  switch (kind) {{
{kind_names}  }}
  return "handle";
}}
[[nodiscard]] constexpr bool mapped(HandleKind kind) noexcept {{
  switch (kind) {{
{mapped}  }}
  return true;
}}

}}  // namespace flyt::api::cu

// X(name, id, kind, handler) for every method; the second list has those with implemented = true.
#define FLYT_CU_METHODS(X) \\
{x_rows}  /* end of FLYT_CU_METHODS */
#define FLYT_CU_IMPLEMENTED_METHODS(X) \\
{impl_rows}  /* end of FLYT_CU_IMPLEMENTED_METHODS */
"""


def codec_tag(arg: Arg) -> str:
    if arg.size == "cstring":
        return "CStr"
    if arg.size is None:
        return f"Val<{arg.type}>"
    return {"out": "Out", "in": "In", "inout": "InOut"}[arg.dir] + f"<{pointee(arg.type)}>"


def params_text(entry: Entry) -> str:
    return ", ".join(f"{a.type} {a.name}" for a in entry.args)


def generated(api: Api, side: str = "either") -> list[Entry]:
    """Functions generated on one side: side "client" (a generated client stub), "worker" (a
    generated worker handler) or "either" (argument codecs, which both sides use)."""
    chosen = {"client": ("generated", "worker"), "worker": ("generated", "client"),
              "either": ("generated", "worker", "client")}[side]
    return sorted((e for e in api.entries if e.handler in chosen), key=lambda e: e.id)


def render_specs(api: Api) -> str:
    specs = "".join(f"template <> struct Spec<Method::{e.name}> {{\n"
                    f"  using Args = ArgList<{', '.join(codec_tag(a) for a in e.args)}>;\n}};\n"
                    for e in generated(api))
    return f"""{banner('//')}//
// How each driver function with a generated handler marshals its arguments: one codec tag per
// argument (flyt/api/codec.hpp), in order. Handles travel as Val: an id, or an unmapped kind's
// value (cu_methods.hpp).
#pragma once

#include <cuda.h>

#include "flyt/api/codec.hpp"
#include "flyt/api/cu_methods.hpp"

namespace flyt::api::cu {{

template <auto M> struct Spec;

{specs}
}}  // namespace flyt::api::cu
"""


def render_client_stubs(api: Api) -> str:
    lines = [banner("//"),
             "// The exported definitions of the implemented driver functions with generated handlers:\n"
             "// each is one call of flyt::interpose::cu::forward (interpose/driver/forward.hpp). A\n"
             "// per-thread export (_ptds/_ptsz) names the calling thread's default stream for stream 0.\n",
             "#include \"forward.hpp\"\n\n",
             "#define FLYT_CU_EXPORT extern \"C\" __attribute__((visibility(\"default\")))\n\n"]
    for e in generated(api, "client"):
        if not e.implemented:
            continue
        for exported in [e.name] + e.also:
            per_thread = exported.endswith(PER_THREAD_SUFFIXES)
            names = ", ".join(f"::flyt::interpose::cu::perThread({a.name})"
                              if per_thread and canonical_type(a.type) == "CUstream" else a.name for a in e.args)
            call = f"::flyt::interpose::cu::forward<::flyt::api::cu::Method::{e.name}>({names})"
            names_set = {a.name for a in e.args}
            before = []
            after = []
            # Stream state kept in the process (driver_client.hpp): a call on a stream makes it busy;
            # a query or synchronisation that succeeded makes it idle, unless work came since.
            streams = [f"::flyt::interpose::cu::perThread({a.name})" if per_thread else a.name
                       for a in e.args if canonical_type(a.type) == "CUstream" and a.dir == "in"]
            # Any other call naming a stream counts as work on it (getters too: asking costs at
            # most one round trip later, never a wrong answer), from when the call has been batched
            # (StreamWork marks it when the stub returns).
            if e.stream_idle is None:
                before.extend(f"  const ::flyt::interpose::cu::StreamWork work{i}({s});\n" for i, s in enumerate(streams))
            else:
                before.append(f"  const auto observed = ::flyt::interpose::cu::streamGeneration({streams[0]});\n")
                if e.stream_idle == "query":
                    before.append(f"  if (::flyt::interpose::cu::streamIdle({streams[0]}, observed)) return CUDA_SUCCESS;\n")
                after.append(f"::flyt::interpose::cu::streamIdled({streams[0]}, observed);")
            # Stream capture kept in the process (streams.cpp): while no capture is active anywhere
            # in it, no stream is capturing, and asking costs no round trip (PyTorch's allocator
            # asks on every allocation).
            always_after = []
            # Scoped by the kernel or function and the attribute the call names (forward.hpp).
            after.extend(f"::flyt::interpose::cu::forgetCached(::flyt::api::cu::kCacheGroup_{g}{', ' + names if names else ''});"
                         for g in e.invalidates)
            if e.idempotent:
                method = f"::flyt::api::cu::Method::{e.name}"
                before.append(f"  if (::flyt::interpose::cu::alreadyApplied<{method}>({names})) return CUDA_SUCCESS;\n")
                after.append(f"::flyt::interpose::cu::rememberApplied<{method}>({names});")
            if e.capture == "query":
                status = next(a.name for a in e.args if canonical_type(a.type) == "CUstreamCaptureStatus*")
                before.append(f"  if ({status} != nullptr && ::flyt::interpose::cu::noCaptureActive()) {{ "
                              f"*{status} = CU_STREAM_CAPTURE_STATUS_NONE; return CUDA_SUCCESS; }}\n")
            elif e.capture == "begin":
                after.append(f"::flyt::interpose::cu::captureBegun({streams[0]});")
            elif e.capture == "end":
                always_after.append(f"::flyt::interpose::cu::captureEnded({streams[0]});")
            for a in e.args:
                if a.role == "alloc":
                    after.append(f"::flyt::interpose::cu::allocated(*{a.name}, {parse_expression(e.name, a.bytes, names_set)});")
                elif a.role == "free":
                    # Known here: a wrong pointer fails at once, as the driver's own free does.
                    before.append(f"  if (!::flyt::interpose::cu::freeable({a.name})) return CUDA_ERROR_INVALID_VALUE;\n")
                    after.append(f"::flyt::interpose::cu::released({a.name});")
            if after or always_after:
                body = f"  const CUresult result = {call};\n"
                if after:
                    body += f"  if (result == CUDA_SUCCESS) {{ {' '.join(after)} }}\n"
                body += "".join(f"  {line}\n" for line in always_after) + "  return result;\n"
            else:
                body = f"  return {call};\n"
            lines.append(f"FLYT_CU_EXPORT CUresult {exported}({params_text(e) or 'void'}) {{\n{''.join(before)}{body}}}\n")
    return "".join(lines)


def implemented_exports(api: Api) -> set[str]:
    names = set()
    for e in api.entries:
        if e.implemented and not e.internal:
            names.add(e.name)
            names.update(e.also)
    return names


def render_unsupported(api: Api, exports: list[str]) -> str:
    done = implemented_exports(api)
    lines = [banner("//"),
             "// A stub for every export of NVIDIA's driver that Flyt does not implement: it logs its name\n"
             "// once and returns CUDA_ERROR_NOT_SUPPORTED. Every driver function returns CUresult and the\n"
             "// stubs read no argument, so one shape serves all (this file includes no CUDA header, whose\n"
             "// prototypes it would contradict).\n",
             "#include \"unsupported.hpp\"\n\n",
             "#define FLYT_CU_EXPORT extern \"C\" __attribute__((visibility(\"default\")))\n\n"]
    for name in exports:
        if name not in done:
            lines.append(f'FLYT_CU_EXPORT int {name}() {{ return ::flyt::interpose::cu::reportUnsupported("{name}"); }}\n')
    return "".join(lines)


def render_procs(rows: list[tuple[str, int, bool, str]]) -> str:
    body = "".join(f'  X("{name}", {version}, {str(pt).lower()}, {export}) \\\n'
                   for name, version, pt, export in rows)
    return (f"{banner('//')}// X(name, version, perThread, export): cuGetProcAddress answers `name` asked for at\n"
            f"// cudaVersion >= version (the newest such row) with `export`; perThread rows answer\n"
            f"// CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM. From cudaTypedefs.h and cuda.toml's [[proc]].\n"
            f"#define FLYT_CU_PROCS(X) \\\n{body}  /* end of FLYT_CU_PROCS */\n")


def render_map(exports: list[str]) -> str:
    body = "".join(f"    {name};\n" for name in exports)
    return f"/* {banner('')[1:-1]} */\n{{\n  global:\n{body}  local:\n    *;\n}};\n"


def render_driver_table(public: dict[str, Prototype], exports: list[str]) -> str:
    names = [n for n in exports if n in public]
    members = "".join(f"  CUresult (*{n})({', '.join(p.type for p in public[n].params) or 'void'}) = nullptr;\n"
                      for n in names)
    x_rows = "".join(f"  X({n}) \\\n" for n in names)
    return f"""{banner('//')}//
// The worker's view of a CUDA driver: one pointer per export that the toolkit's cuda.h declares
// (those an application compiled today can reach), filled by the real driver's loader or the GPU
// stand-in. A null member is a function that driver lacks (CUDA_ERROR_NOT_SUPPORTED).
#pragma once

#include <cuda.h>
#include <cudaProfiler.h>

namespace flyt::api::cu {{

// Deprecated functions (cuCtxGetSharedMemConfig, ...) are members too: applications still call them.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
struct DriverTable {{
{members}}};
#pragma GCC diagnostic pop

}}  // namespace flyt::api::cu

// X(name) for every member of DriverTable.
#define FLYT_CU_DRIVER_FUNCTIONS(X) \\
{x_rows}  /* end of FLYT_CU_DRIVER_FUNCTIONS */
"""


def render_serve(api: Api) -> str:
    """The worker's handler of every generated function (see backend/src/driver/serve.hpp for the
    Context each is written against)."""
    out = [banner("//"),
           "// One handler per generated driver function, written against flyt::backend::cu::ServeContext\n"
           "// (backend/src/driver/serve_context.hpp): decode the arguments, refuse what the roles of\n"
           "// api/cuda.toml do not allow, translate handles, charge allocations, call the driver,\n"
           "// record what was created or destroyed, encode the out-arguments.\n\n"]
    cases = []
    for e in generated(api, "worker"):
        fn = f"serve_{e.name}"
        names = {a.name for a in e.args}
        body = [f"// {e.name} ({e.kind})\n",
                f"inline Outcome {fn}(ServeContext& c, ::flyt::api::ArgReader& in) {{\n"]
        for a in e.args:
            t = "std::string" if a.size == "cstring" else pointee(a.type) if a.size else a.type
            if t.startswith("const "):
                t = t[len("const "):]  # the handler's own copy, decoded into
            body.append(f"  {t} {a.name}{{}};\n")
        decodes = " && ".join(f"in.{'getString' if a.size == 'cstring' else 'get'}({a.name})"
                              for a in e.args if not (a.size and a.dir == "out"))
        cond = f"!({decodes}) || " if decodes else ""
        body.append(f"  if ({cond}!in.exhausted()) return c.malformed(\"{e.name}: arguments of the wrong size\");\n")
        calls = []
        post = []
        charge = None
        for a in e.args:
            handle = handle_of(api, a)
            where = f"\"{e.name}\", \"{a.name}\""
            if handle is not None:
                kinds = [handle.kind] + handle.accepts
                kind_list = ", ".join(f"::flyt::api::cu::HandleKind::{k}" for k in kinds)
                op = a.op or ("use" if a.dir == "in" else "create")
                if a.dir == "in":
                    body.append(f"  {handle.type} {a.name}_real{{}};\n")
                    body.append(f"  if (auto refused = c.handles().use({where}, {a.name}, {{{kind_list}}}, &{a.name}_real)) return *refused;\n")
                    calls.append(f"{a.name}_real")
                    if op == "destroy":
                        post.append(f"    c.handles().destroy({a.name});\n")
                else:
                    calls.append(f"&{a.name}")
                    if op == "create":
                        post.append(f"    {a.name} = c.handles().create(::flyt::api::cu::HandleKind::{handle.kind}, {a.name});\n")
                    else:
                        post.append(f"    {a.name} = c.handles().lookup(::flyt::api::cu::HandleKind::{handle.kind}, {a.name});\n")
                continue
            if a.role == "device":
                expr = parse_expression(e.name, a.bytes, names)
                body.append(f"  if (auto refused = c.deviceRange({where}, {a.name}, {expr})) return *refused;\n")
            elif a.role == "address":
                body.append(f"  if (auto refused = c.deviceRange({where}, {a.name}, 1)) return *refused;\n")
            elif a.role == "free":
                body.append(f"  if (auto refused = c.isAllocation({where}, {a.name})) return *refused;\n")
            elif a.role == "alloc":
                charge = (a, parse_expression(e.name, a.bytes, names))
            if canonical_type(a.type) == "CUdevice":
                body.append(f"  if (auto refused = c.deviceOrdinal({where}, &{a.name})) return *refused;\n")
            calls.append(f"{a.name}.c_str()" if a.size == "cstring" else f"&{a.name}" if a.size else a.name)
        # Before the charge: a function the worker's driver lacks must not keep the quota charged.
        body.append(f"  if (c.driver().{e.name} == nullptr) return c.unsupported(\"{e.name}\");\n")
        if charge:
            body.append(f"  const std::uint64_t charged = {charge[1]};\n")
            body.append(f"  if (auto refused = c.reserve(\"{e.name}\", charged)) return *refused;\n")
        body.append(f"  Outcome out;\n  out.error = c.driver().{e.name}({', '.join(calls)});\n")
        for a in e.args:
            if a.role == "free":
                post.append(f"    c.released({a.name});\n")
        if charge:
            post.insert(0, f"    c.allocated({charge[0].name}, charged);\n")
            body.append("  if (out.error != CUDA_SUCCESS) c.unreserve(charged);\n")
        outs = [a for a in e.args if a.size and a.dir != "in"]
        if post or outs:
            body.append("  if (out.error == CUDA_SUCCESS) {\n")
            body.extend(post)
            if outs:
                body.append("    ::flyt::api::ArgWriter writer(out.results);\n")
                body.extend(f"    writer.put({a.name});\n" for a in outs)
            body.append("  }\n")
        body.append("  return out;\n}\n\n")
        out.extend(body)
        cases.append(f"  X({e.name}) \\\n")
    out.append(f"// X(name) for every generated function: serve_<name> above.\n"
               f"#define FLYT_CU_SERVED(X) \\\n{''.join(cases)}  /* end of FLYT_CU_SERVED */\n")
    return "".join(out)


def extract_errors(headers: list[str]) -> list[tuple[str, int, str]]:
    path = next((h for h in headers if h.endswith("/cuda.h")), None)
    if path is None:
        raise InputError("cuda.h was not among the preprocessed headers")
    text = pathlib.Path(path).read_text()
    body = re.search(r"typedef\s+enum\s+cudaError_enum\s*\{(.*?)\}\s*CUresult;", text, re.S)
    if body is None:
        raise InputError(f"{path}: enum cudaError_enum not found")
    errors = []
    for match in re.finditer(r"(?:/\*\*(.*?)\*/\s*)?(CUDA_\w+)\s*=\s*(\d+)", body.group(1), re.S):
        doc = " ".join((match.group(1) or "").replace("*", " ").split())
        doc = re.sub(r"\\\w+\s+", "", doc).replace("::", "")
        sentence = doc.split(". ")[0].rstrip(".") if doc else match.group(2)
        errors.append((match.group(2), int(match.group(3)), sentence.replace('"', "'")))
    return errors


def render_errors(errors: list[tuple[str, int, str]]) -> str:
    rows = "".join(f'  X({name}, {value}, "{text}") \\\n' for name, value, text in errors)
    return (f"{banner('//')}// X(name, value, description) for every CUresult of the toolkit's cuda.h;\n"
            f"// the description is the first sentence of NVIDIA's doc comment.\n"
            f"#define FLYT_CU_ERRORS(X) \\\n{rows}  /* end of FLYT_CU_ERRORS */\n")


def write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


OUTPUTS = ("flyt/api/cu_methods.hpp", "flyt/api/cu_specs.hpp", "flyt/api/cu_driver_table.hpp",
           "flyt/api/cu_errors.inc", "cu_client_stubs.cpp", "cu_unsupported_stubs.cpp", "cu_procs.inc",
           "cu_serve.inc", "libcuda.map")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True, type=pathlib.Path)
    parser.add_argument("--exports", required=True, type=pathlib.Path)
    parser.add_argument("--check", action="store_true", help="validate the inputs, write nothing")
    parser.add_argument("--cxx", help="C++ compiler used to preprocess the CUDA headers")
    parser.add_argument("--include-dir", action="append", default=[], help="CUDA include directory")
    parser.add_argument("--out-dir", type=pathlib.Path)
    parser.add_argument("--depfile", type=pathlib.Path)
    options = parser.parse_args()
    try:
        api = load_api(options.api)
        exports = load_exports(options.exports)
        check_exports(str(options.api), api, exports)
        if options.check:
            return 0
        if not options.cxx or not options.out_dir:
            raise InputError("--cxx and --out-dir are needed unless --check is given")
        internal_source, headers = preprocess(options.cxx, options.include_dir, PROBE_INTERNAL)
        public_source, _ = preprocess(options.cxx, options.include_dir, PROBE_PUBLIC)
        protos = extract_declarations(internal_source, "CUresult", "cu")
        public = extract_declarations(public_source, "CUresult", "cu")
        missing = [n for n in exports if n not in protos]
        if missing:
            raise InputError(f"{options.exports}: no declaration in cuda.h for {', '.join(missing)}")
        check_against_headers(str(options.api), api, protos)
        typedefs_path = next((h for h in headers if h.endswith("/cuda.h")), None)
        typedefs = pathlib.Path(typedefs_path).with_name("cudaTypedefs.h")
        headers.append(str(typedefs))
        procs = proc_table(typedefs.read_text(), exports, api.procs)
        texts = [render_methods(api), render_specs(api), render_driver_table(public, exports),
                 render_errors(extract_errors(headers)), render_client_stubs(api),
                 render_unsupported(api, exports), render_procs(procs), render_serve(api), render_map(exports)]
    except InputError as error:
        print(f"generate_cuda.py: error: {error}", file=sys.stderr)
        return 1
    for name, text in zip(OUTPUTS, texts):
        write(options.out_dir / name, text)
    if options.depfile:
        escape = lambda p: str(p).replace(" ", "\\ ")
        options.depfile.write_text(" ".join(escape(options.out_dir / o) for o in OUTPUTS) + ": \\\n  "
                                   + " \\\n  ".join(escape(h) for h in headers) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
