#!/usr/bin/env python3
"""Generates Flyt's CUDA runtime API tables from api/cudart.toml.

Run by CMake at build time (api/CMakeLists.txt); everything it writes lands in the build tree:

  flyt/api/methods.hpp     enum class Method, the constexpr method table, X-macros
  unsupported_stubs.cpp    an extern "C" stub with NVIDIA's prototype for every export of
                           NVIDIA's libcudart.so.13 that Flyt does not implement (yet)
  libcudart.map            the linker version script: every export, one version node

Inputs:
  api/cudart.toml              the functions Flyt forwards (see the top of that file)
  api/cudart-undeclared.toml   prototypes of exports that NVIDIA's headers do not declare
  api/libcudart13-exports.txt  NVIDIA's export set, `name@version-node`, one a line
  the CUDA headers             run through the C++ preprocessor (--cxx) to read the real
                               prototypes; the headers it read go into --depfile

A bad input is reported as `generate.py: error: <file>: '<entry>': <what>` and exit status 1.
With --check only the TOML files and the exports list are validated (no headers, no outputs).
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import sys
import tomllib

from cdecl import (IDENT, InputError, Prototype, canonical_type, extract_prototypes, fail,
                   format_params, is_pointer, preprocess)

KINDS = ("sync", "async", "local", "cached")
HANDLERS = ("generated", "custom")
DIRECTIONS = ("in", "out", "inout")
ENTRY_KEYS = {"name", "id", "kind", "handler", "implemented", "returns", "per_thread", "args",
              "unsupported_return", "note"}
ARG_KEYS = {"name", "type", "dir", "size"}
PER_THREAD_SUFFIXES = ("_ptds", "_ptsz")

# Headers that declare every exported function (docs/dev/cuda13-runtime-abi.md §1). The stubs
# include the public ones, so a prototype that disagrees with NVIDIA's does not compile.
PUBLIC_HEADERS = ("cuda_runtime_api.h", "cuda_profiler_api.h", "cuda_gl_interop.h",
                  "cuda_egl_interop.h", "cuda_vdpau_interop.h")
# The __cuda* entry points are declared only for nvcc's own host pass: crt/device_functions.h
# under __CUDACC__ (push configuration, get/launch kernel) and the second inclusion of
# crt/host_runtime.h (registration). They are read here, never included by the stubs.
PROBE = "\n".join(
    ["#define __CUDACC__", "#define __CUDA_INCLUDE_COMPILER_INTERNAL_HEADERS__"]
    + [f"#include <{h}>" for h in PUBLIC_HEADERS]
    + ["#include <crt/device_functions.h>", "#include <crt/host_runtime.h>",
       "#include <crt/host_runtime.h>", ""])


# ---------------------------------------------------------------------------------------------
# Inputs

@dataclasses.dataclass
class Arg:
    name: str
    type: str
    dir: str
    size: str | None


@dataclasses.dataclass
class Entry:
    name: str
    id: int
    kind: str
    handler: str
    implemented: bool
    returns: str
    per_thread: str | None
    args: list[Arg]
    unsupported_return: str | None



def check_size_rule(where: str, arg: Arg, by_name: dict[str, Arg]) -> None:
    rule = arg.size
    if rule in ("sizeof", "cstring"):
        return
    match = re.fullmatch(r"([A-Za-z_]\w*)(\s*\*\s*sizeof)?", rule)
    if not match:
        raise fail(where, f"argument '{arg.name}': size rule '{rule}' is not one of "
                          "\"sizeof\", \"cstring\", \"<argument>\" or \"<argument> * sizeof\"")
    other = by_name.get(match.group(1))
    if other is None:
        raise fail(where, f"argument '{arg.name}': size rule '{rule}' names no argument of this "
                          f"function (arguments: {', '.join(by_name)})")
    if other is arg or is_pointer(other.type):
        raise fail(where, f"argument '{arg.name}': size rule '{rule}' must name another, "
                          "non-pointer argument")


def parse_arg(where: str, raw: object, index: int) -> Arg:
    if not isinstance(raw, dict):
        raise fail(where, f"argument #{index + 1} is not a table")
    unknown = set(raw) - ARG_KEYS
    if unknown:
        raise fail(where, f"argument #{index + 1}: unknown key(s) {sorted(unknown)}")
    for key in ("name", "type"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise fail(where, f"argument #{index + 1}: '{key}' must be a non-empty string")
    name = raw["name"]
    direction = raw.get("dir", "in")
    if direction not in DIRECTIONS:
        raise fail(where, f"argument '{name}': unknown direction '{direction}' "
                          f"(expected one of {', '.join(DIRECTIONS)})")
    size = raw.get("size")
    if size is not None and not isinstance(size, str):
        raise fail(where, f"argument '{name}': 'size' must be a string")
    arg = Arg(name, raw["type"], direction, size)
    if not IDENT.match(name):
        raise fail(where, f"argument '{name}' is not a C identifier")
    if direction != "in" and not is_pointer(arg.type):
        raise fail(where, f"argument '{name}': direction '{direction}' needs a pointer type, "
                          f"not '{arg.type}'")
    if size is not None and not is_pointer(arg.type):
        raise fail(where, f"argument '{name}': a size rule needs a pointer type, not '{arg.type}'")
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
        raise InputError(f"{where}: a 'local' function is answered by hand-written client code; "
                         "its handler must be 'custom'")
    implemented = raw.get("implemented", False)
    if not isinstance(implemented, bool):
        raise InputError(f"{where}: 'implemented' must be true or false")
    per_thread = raw.get("per_thread")
    if per_thread is not None and per_thread not in (name + s for s in PER_THREAD_SUFFIXES):
        raise InputError(f"{where}: per_thread must be '{name}_ptds' or '{name}_ptsz' (got {per_thread!r})")
    raw_args = raw.get("args", [])
    if not isinstance(raw_args, list):
        raise InputError(f"{where}: 'args' must be an array of tables")
    args = [parse_arg(where, a, i) for i, a in enumerate(raw_args)]
    by_name: dict[str, Arg] = {}
    for arg in args:
        if arg.name in by_name:
            raise InputError(f"{where}: argument '{arg.name}' appears twice")
        by_name[arg.name] = arg
    for arg in args:
        if arg.size is not None:
            check_size_rule(where, arg, by_name)
        elif handler == "generated" and arg.dir != "in":
            raise InputError(f"{where}: argument '{arg.name}' is '{arg.dir}' but has no size rule; a "
                             "generated handler cannot marshal it")
    returns = raw.get("returns", "cudaError_t")
    unsupported_return = raw.get("unsupported_return")
    for key, value in (("returns", returns), ("unsupported_return", unsupported_return)):
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: '{key}' must be a string")
    return Entry(name, entry_id, kind, handler, implemented, returns, per_thread, args,
                 unsupported_return)


def load_api(path: pathlib.Path) -> list[Entry]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML: {error}") from None
    unknown = set(data) - {"fn", "retired_ids"}
    if unknown:
        raise InputError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    retired = data.get("retired_ids", [])
    if not isinstance(retired, list) or not all(isinstance(i, int) for i in retired):
        raise InputError(f"{path}: 'retired_ids' must be an array of integers")
    entries = [parse_entry(str(path), raw) for raw in data.get("fn", [])]
    names: dict[str, Entry] = {}
    ids: dict[int, Entry] = {}
    for entry in entries:
        where = f"{path}: '{entry.name}'"
        if entry.name in names:
            raise InputError(f"{where}: duplicate name (ids {names[entry.name].id} and {entry.id})")
        if entry.id in ids:
            raise InputError(f"{where}: duplicate id {entry.id}, also used by '{ids[entry.id].name}'")
        if entry.id in retired:
            raise InputError(f"{where}: id {entry.id} is retired and may never be used again")
        names[entry.name] = entry
        ids[entry.id] = entry
    return entries


def load_undeclared(path: pathlib.Path) -> dict[str, tuple[Prototype, str | None]]:
    data = tomllib.loads(path.read_text())
    result = {}
    for raw in data.get("export", []):
        name, proto = raw.get("name"), raw.get("proto")
        if not isinstance(name, str) or not isinstance(proto, str):
            raise InputError(f"{path}: every [[export]] needs 'name' and 'proto' strings")
        parsed = extract_prototypes(f"extern {proto.strip().rstrip(';')};").get(name)
        if parsed is None:
            raise InputError(f"{path}: '{name}': cannot read the prototype {proto!r}")
        result[name] = (parsed, raw.get("unsupported_return"))
    return result


def load_exports(path: pathlib.Path) -> tuple[list[str], str]:
    names, tags = [], set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, tag = line.strip().partition("@")
        if not sep or not IDENT.match(name) or not tag:
            raise InputError(f"{path}:{number}: expected 'name@version-node', got {line!r}")
        names.append(name)
        tags.add(tag)
    if len(tags) != 1:
        raise InputError(f"{path}: expected exactly one version node, found {sorted(tags)}")
    if len(set(names)) != len(names):
        raise InputError(f"{path}: a name is listed twice")
    return names, tags.pop()


def check_exports(api_path: str, entries: list[Entry], exports: list[str]) -> None:
    exported = set(exports)
    by_name = {e.name: e for e in entries}
    for entry in entries:
        if entry.name not in exported:
            raise InputError(f"{api_path}: '{entry.name}' is not exported by NVIDIA's runtime")
        if entry.per_thread and entry.per_thread not in exported:
            raise InputError(f"{api_path}: '{entry.name}': per_thread '{entry.per_thread}' is not exported")
    for name in exports:
        for suffix in PER_THREAD_SUFFIXES:
            base = name.removesuffix(suffix)
            if base != name and base in by_name and by_name[base].per_thread != name:
                raise InputError(f"{api_path}: '{base}': NVIDIA also exports '{name}' (the header's "
                                 f"per-thread-stream name for it); set per_thread = \"{name}\"")


def check_against_headers(api_path: str, entries: list[Entry], protos: dict[str, Prototype]) -> None:
    for entry in entries:
        where = f"{api_path}: '{entry.name}'"
        proto = protos.get(entry.name)
        if proto is None:
            raise InputError(f"{where}: no declaration in the CUDA headers")
        if canonical_type(entry.returns) != proto.returns:
            raise InputError(f"{where}: returns '{entry.returns}', the header says '{proto.returns}'")
        if len(entry.args) != len(proto.params):
            raise InputError(f"{where}: {len(entry.args)} argument(s), the header declares "
                             f"{len(proto.params)}: {format_params(proto)}")
        for arg, param in zip(entry.args, proto.params):
            if canonical_type(arg.type) != param.type or (param.name and param.name != arg.name):
                raise InputError(f"{where}: argument '{arg.name}' is '{arg.type}', the header "
                                 f"declares '{param.type} {param.name or ''}'".rstrip() + "'")


# ---------------------------------------------------------------------------------------------
# Outputs

def banner(comment: str) -> str:
    return (f"{comment} Generated from api/cudart.toml by api/generate.py. Do not edit: change the "
            f"TOML or the generator.\n")



def unsupported_value(proto: Prototype, override: str | None) -> str:
    if override is not None:
        return override
    if proto.returns == "const char*":
        return '"operation not supported by Flyt"'
    if is_pointer(proto.returns):
        return "nullptr"
    if proto.returns == "struct cudaChannelFormatDesc":
        return "{0, 0, 0, 0, cudaChannelFormatKindNone}"
    return "{}"


def stub(proto: Prototype, override: str | None) -> str:
    call = f'::flyt::interpose::reportUnsupported("{proto.name}")'
    if proto.returns == "cudaError_t":
        body = f"return {call};"
    elif proto.returns == "void":
        body = f"(void){call};"
    else:
        body = f"(void){call}; return {unsupported_value(proto, override)};"
    return f"FLYT_CUDART_EXPORT {proto.returns} {proto.name}({format_params(proto)}) {{ {body} }}\n"


def render_stubs(stubs: list[tuple[Prototype, str | None]]) -> str:
    lines = [banner("//"),
             "// One extern \"C\" definition, with NVIDIA's prototype, for every export of NVIDIA's\n"
             "// libcudart.so.13 that Flyt does not implement: it logs its name once and answers\n"
             "// cudaErrorNotSupported (or the value noted for functions that return something else).\n"
             "// The definitions carry no `noexcept` because NVIDIA's declarations have none and C++17\n"
             "// makes a mismatch ill-formed; no exception can leave them, since the only call they make\n"
             "// is noexcept (checked below).\n",
             "#include \"unsupported.hpp\"\n"]
    lines += [f"#include <{h}>\n" for h in PUBLIC_HEADERS]
    lines.append("\n#define FLYT_CUDART_EXPORT extern \"C\" __attribute__((visibility(\"default\")))\n\n"
                 "static_assert(noexcept(::flyt::interpose::reportUnsupported(\"\")));\n\n")
    lines += [stub(proto, override) for proto, override in stubs]
    return "".join(lines)


def render_map(exports: list[str], tag: str) -> str:
    body = "".join(f"    {name};\n" for name in exports)
    return f"{banner('/*')[:-1]} */\n{tag} {{\n  global:\n{body}  local:\n    *;\n}};\n"


def render_methods(entries: list[Entry]) -> str:
    ordered = sorted(entries, key=lambda e: e.id)
    limit = ordered[-1].id + 1 if ordered else 1
    cap = lambda s: s[0].upper() + s[1:]
    rows = {e.id: e for e in ordered}

    def x_macro(macro: str, chosen: list[Entry]) -> str:
        lines = "".join(f"  X({e.name}, {e.id}, {cap(e.kind)}, {cap(e.handler)}) \\\n" for e in chosen)
        return f"#define {macro}(X) \\\n{lines}  /* end of {macro} */\n"

    table = []
    for i in range(limit):
        e = rows.get(i)
        if e is None:
            table.append("    MethodInfo{},  // no method has this id\n")
        else:
            table.append(f'    MethodInfo{{"{e.name}", Method::{e.name}, Kind::{cap(e.kind)}, '
                         f"Handler::{cap(e.handler)}, {len(e.args)}, {str(e.implemented).lower()}}},\n")
    variants = "".join(f"  X({e.per_thread}, {e.name}, {cap(e.per_thread[-4:])}) \\\n"
                       for e in ordered if e.per_thread)
    enumerators = "".join(f"  {e.name} = {e.id},\n" for e in ordered)
    return f"""{banner('//')}//
// The CUDA runtime functions Flyt forwards: method ids (the wire's method numbers), kinds and
// handlers. Enumerators are spelled like the C functions, `__cuda*` included, so that one name
// serves everywhere. Ids are stable and only ever appended (api/cudart.toml).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace flyt::api {{

// How a call travels: waited for, batched, answered on the client, or fetched once and cached.
enum class Kind : std::uint8_t {{ Sync, Async, Local, Cached }};
// Generated (client stub and backend handler made from the argument rules) or hand-written.
enum class Handler : std::uint8_t {{ Generated, Custom }};

enum class Method : std::uint32_t {{
{enumerators}}};

struct MethodInfo {{
  std::string_view name;  // empty where no method has the id
  Method method{{}};
  Kind kind{{}};
  Handler handler{{}};
  std::uint8_t argCount{{}};
  bool implemented{{}};    // false: the library exports an "unsupported" stub instead
}};

// One past the highest id: kMethods has this many rows, indexed by id.
inline constexpr std::uint32_t kMethodIdLimit = {limit};
inline constexpr std::size_t kMethodCount = {len(ordered)};

inline constexpr std::array<MethodInfo, kMethodIdLimit> kMethods{{{{
{''.join(table)}}}}};

// The row for a method id received from the wire, or nullptr when no method has that id.
[[nodiscard]] constexpr const MethodInfo* methodInfo(std::uint32_t id) noexcept {{
  return id < kMethodIdLimit && !kMethods[id].name.empty() ? &kMethods[id] : nullptr;
}}

[[nodiscard]] constexpr const MethodInfo& methodInfo(Method method) noexcept {{
  return kMethods[static_cast<std::uint32_t>(method)];
}}

}}  // namespace flyt::api

// X(name, id, kind, handler): name is the C function (and Method enumerator), kind one of
// Sync/Async/Local/Cached (flyt::api::Kind), handler Generated/Custom (flyt::api::Handler).
{x_macro('FLYT_API_METHODS', ordered)}
// The subset with `implemented = true`: what the library defines instead of a stub.
{x_macro('FLYT_API_IMPLEMENTED_METHODS', [e for e in ordered if e.implemented])}
// X(exported, base, stream): the per-thread-default-stream export that the header's
// __CUDART_API_PTDS/__CUDART_API_PTSZ macro maps `base` to under --default-stream per-thread.
// Same prototype and method id as `base`; stream is Ptds or Ptsz.
#define FLYT_API_PER_THREAD_VARIANTS(X) \\
{variants}  /* end of FLYT_API_PER_THREAD_VARIANTS */
"""


def pointee(c_type: str) -> str:
    """The type an out/in pointer points to: "void **" -> "void *", "size_t *" -> "size_t"."""
    text = c_type.strip()
    assert text.endswith("*"), c_type
    return text[:-1].strip()


def arg_kind(arg: Arg) -> str:
    """The codec tag (flyt/api/codec.hpp) that marshals one argument of a generated function."""
    if arg.size is None:
        return f"Val<{arg.type}>"
    if arg.size == "sizeof":
        return {"out": "Out", "in": "In", "inout": "InOut"}[arg.dir] + f"<{pointee(arg.type)}>"
    raise InputError(f"'{arg.name}': size rule '{arg.size}' is not supported by generated handlers "
                     "yet; make the function custom")


def params_text(entry: Entry) -> str:
    return ", ".join(f"{a.type} {a.name}" for a in entry.args)


def render_specs(entries: list[Entry]) -> str:
    generated = sorted((e for e in entries if e.handler == "generated"), key=lambda e: e.id)
    specs = "".join(
        f"template <> struct Spec<Method::{e.name}> {{\n"
        f"  using Args = ArgList<{', '.join(arg_kind(a) for a in e.args)}>;\n"
        f"}};\n" for e in generated)
    signatures = "".join(
        f"  X({e.name}, ({params_text(e)}), ({', '.join(a.name for a in e.args)})) \\\n"
        for e in generated)
    return f"""{banner('//')}//
// How each function with a generated handler marshals its arguments: one codec tag per argument
// (flyt/api/codec.hpp), in order. Client stubs and backend handlers are both instantiated from these.
#pragma once

#include <cuda_runtime_api.h>

#include "flyt/api/codec.hpp"
#include "flyt/api/methods.hpp"

namespace flyt::api {{

{specs}
}}  // namespace flyt::api

// X(name, (typed parameters), (parameter names)) for every function with a generated handler.
#define FLYT_API_GENERATED_SIGNATURES(X) \\
{signatures}  /* end of FLYT_API_GENERATED_SIGNATURES */
"""


def render_client_stubs(entries: list[Entry]) -> str:
    chosen = sorted((e for e in entries if e.handler == "generated" and e.implemented),
                    key=lambda e: e.id)
    lines = [banner("//"),
             "// The exported definitions of the implemented functions with generated handlers: each is\n"
             "// one call of flyt::interpose::forward, which marshals by flyt::api::Spec<Method>.\n",
             "#include \"forward.hpp\"\n\n",
             "#define FLYT_CUDART_EXPORT extern \"C\" __attribute__((visibility(\"default\")))\n\n"]
    for e in chosen:
        names = ", ".join(a.name for a in e.args)
        for exported in [e.name] + ([e.per_thread] if e.per_thread else []):
            lines.append(f"FLYT_CUDART_EXPORT {e.returns} {exported}({params_text(e) or 'void'}) {{\n"
                         f"  return ::flyt::interpose::forward<::flyt::api::Method::{e.name}>({names});\n"
                         f"}}\n")
    return "".join(lines)


def extract_errors(headers: list[str]) -> list[tuple[str, int, str]]:
    """(name, value, first sentence of NVIDIA's doc comment) of every enum cudaError member."""
    path = next((h for h in headers if h.endswith("/driver_types.h")), None)
    if path is None:
        raise InputError("driver_types.h was not among the preprocessed headers")
    text = pathlib.Path(path).read_text()
    body = re.search(r"enum\s+__device_builtin__\s+cudaError\s*\{(.*?)\};", text, re.S)
    if body is None:
        raise InputError(f"{path}: enum cudaError not found")
    errors = []
    for match in re.finditer(r"(?:/\*\*(.*?)\*/\s*)?(cudaError\w+|cudaSuccess)\s*=\s*(\d+)", body.group(1), re.S):
        doc = " ".join((match.group(1) or "").replace("*", " ").split())
        doc = re.sub(r"\\\w+\s+", "", doc)  # doxygen commands: \\ref, \\p, \\deprecated, ...
        sentence = doc.split(". ")[0].rstrip(".") if doc else match.group(2)
        errors.append((match.group(2), int(match.group(3)), sentence.replace('"', "'")))
    return errors


def render_errors(errors: list[tuple[str, int, str]]) -> str:
    rows = "".join(f'  X({name}, {value}, "{text}") \\\n' for name, value, text in errors)
    return (f"{banner('//')}// X(name, value, description) for every cudaError_t of the toolkit's "
            f"driver_types.h; the description is the first sentence of NVIDIA's doc comment.\n"
            f"#define FLYT_API_CUDA_ERRORS(X) \\\n{rows}  /* end of FLYT_API_CUDA_ERRORS */\n")


def write(path: pathlib.Path, text: str) -> None:
    # Always written, so that the outputs are newer than the inputs and make does not rerun us.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True, type=pathlib.Path)
    parser.add_argument("--undeclared", required=True, type=pathlib.Path)
    parser.add_argument("--exports", required=True, type=pathlib.Path)
    parser.add_argument("--check", action="store_true", help="validate the inputs, write nothing")
    parser.add_argument("--cxx", help="C++ compiler used to preprocess the CUDA headers")
    parser.add_argument("--include-dir", action="append", default=[], help="CUDA include directory")
    parser.add_argument("--out-dir", type=pathlib.Path)
    parser.add_argument("--depfile", type=pathlib.Path)
    options = parser.parse_args()
    try:
        entries = load_api(options.api)
        exports, tag = load_exports(options.exports)
        check_exports(str(options.api), entries, exports)
        undeclared = load_undeclared(options.undeclared)
        if options.check:
            return 0
        if not options.cxx or not options.out_dir:
            raise InputError("--cxx and --out-dir are needed unless --check is given")
        source, headers = preprocess(options.cxx, options.include_dir, PROBE)
        protos = extract_prototypes(source)
        check_against_headers(str(options.api), entries, protos)
        by_name = {e.name: e for e in entries}
        implemented = {e.name for e in entries if e.implemented}
        implemented |= {e.per_thread for e in entries if e.implemented and e.per_thread}
        stubs = []
        for name in exports:
            if name in implemented:
                continue
            base = next((name.removesuffix(s) for s in PER_THREAD_SUFFIXES
                         if name.endswith(s) and name not in protos), name)
            entry = by_name.get(base)
            override = entry.unsupported_return if entry else None
            if name in undeclared:
                proto, override = undeclared[name]
            elif base in protos:
                proto = protos[base].renamed(name)
            else:
                raise InputError(f"{options.exports}: '{name}' has no prototype in the CUDA headers "
                                 f"and none in {options.undeclared}")
            stubs.append((proto, override))
    except InputError as error:
        print(f"generate.py: error: {error}", file=sys.stderr)
        return 1

    out = options.out_dir
    outputs = [out / "flyt/api/methods.hpp", out / "unsupported_stubs.cpp", out / "libcudart.map",
               out / "flyt/api/specs.hpp", out / "client_stubs.cpp", out / "flyt/api/cuda_errors.inc"]
    try:
        specs = render_specs(entries)
    except InputError as error:
        print(f"generate.py: error: {options.api}: {error}", file=sys.stderr)
        return 1
    write(outputs[0], render_methods(entries))
    write(outputs[1], render_stubs(stubs))
    write(outputs[2], render_map(exports, tag))
    write(outputs[3], specs)
    write(outputs[4], render_client_stubs(entries))
    try:
        write(outputs[5], render_errors(extract_errors(headers)))
    except InputError as error:
        print(f"generate.py: error: {error}", file=sys.stderr)
        return 1
    if options.depfile:
        escape = lambda p: str(p).replace(" ", "\\ ")
        options.depfile.write_text(" ".join(escape(o) for o in outputs) + ": \\\n  "
                                   + " \\\n  ".join(escape(h) for h in headers) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
