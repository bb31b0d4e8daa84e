"""C declarations as NVIDIA's headers write them: the parsing shared by Flyt's API generators.

api/generate.py (the runtime, cudart.toml) and api/generate_cuda.py (the driver, cuda.toml) both
read the real prototypes out of the preprocessed CUDA headers with these functions, and check the
API lists against them.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess
import tempfile


class InputError(Exception):
    """A problem with an input file; the message names the file and the entry."""


def fail(where: str, what: str) -> InputError:
    return InputError(f"{where}: {what}")


@dataclasses.dataclass
class Param:
    type: str          # canonical spelling, e.g. "struct cudaDeviceProp*"
    name: str | None   # None where the header leaves the parameter unnamed


@dataclasses.dataclass
class Prototype:
    name: str
    returns: str
    params: list[Param]

    def renamed(self, name: str) -> "Prototype":
        return Prototype(name, self.returns, self.params)


IDENT = re.compile(r"[A-Za-z_]\w*$")
DECLARATION_END = re.compile(r"\s*;")
C_TYPE_WORDS = {"void", "char", "short", "int", "long", "float", "double", "signed", "unsigned",
                "const", "volatile", "struct", "enum", "union", "bool"}


def canonical_type(text: str) -> str:
    tokens = re.findall(r"[A-Za-z_]\w*|\S", text)
    return re.sub(r"\s*\*\s*", "*", " ".join(tokens)).strip()


def split_top_level(text: str, sep: str = ",") -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_param(text: str) -> Param:
    text = split_top_level(text, "=")[0].strip()   # drop a C++ default argument
    pointer_to_function = re.search(r"\(\s*\*\s*([A-Za-z_]\w*)\s*\)", text)
    if pointer_to_function:
        name = pointer_to_function.group(1)
        return Param(canonical_type(text.replace(name, "", 1)), name)
    tokens = re.findall(r"[A-Za-z_]\w*|\S", text)
    words = [t for t in tokens if IDENT.match(t)]
    last = tokens[-1] if tokens else ""
    named = (IDENT.match(last) and len(words) > 1 and last not in C_TYPE_WORDS
             and tokens[-2] not in ("struct", "enum", "union"))
    if named:
        return Param(canonical_type(" ".join(tokens[:-1])), last)
    return Param(canonical_type(text), None)


def parse_params(text: str) -> list[Param]:
    text = text.strip()
    if text in ("", "void"):
        return []
    return [parse_param(p) for p in split_top_level(text)]


def strip_attributes(text: str) -> tuple[str, list[str]]:
    """Removes every __attribute__((...)); returns the text and the attribute bodies."""
    out, attrs, pos = [], [], 0
    while (start := text.find("__attribute__", pos)) >= 0:
        out.append(text[pos:start])
        open_paren = text.index("(", start)
        depth, i = 0, open_paren
        while True:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        attrs.append(text[open_paren + 2:i - 1].strip())
        pos = i + 1
    out.append(text[pos:])
    return "".join(out), attrs


def extract_prototypes(source: str) -> dict[str, Prototype]:
    """Every `extern` function declaration at namespace scope of the preprocessed text.

    A name declared both for the host and for the device (cuda_device_runtime_api.h) keeps its
    host declaration."""
    text = re.sub(r"\s+", " ", source)
    found: dict[str, tuple[Prototype, bool]] = {}
    for match in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", text):
        start = max(text.rfind(c, 0, match.start()) for c in ";{}") + 1
        prefix = text[start:match.start()].strip()
        if not prefix.startswith("extern") or prefix.count("(") != prefix.count(")"):
            continue
        prefix, attrs = strip_attributes(prefix)
        if "(" in prefix or "=" in prefix or re.search(r"\b(template|static|typedef)\b", prefix):
            continue
        depth, i = 0, match.end() - 1
        while True:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        if not DECLARATION_END.match(text, i + 1):
            continue
        returns = canonical_type(re.sub(r'^extern\s*("C")?', "", prefix))
        if not returns:
            continue
        proto = Prototype(match.group(1), returns, parse_params(text[match.end():i]))
        device_only = "device" in attrs and "host" not in attrs
        if proto.name not in found or (found[proto.name][1] and not device_only):
            found[proto.name] = (proto, device_only)
    return {name: proto for name, (proto, _) in found.items()}


def preprocess(cxx: str, include_dirs: list[str], probe_text: str) -> tuple[str, list[str]]:
    """Runs the C++ preprocessor over `probe_text`; returns the output and every header it read."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = pathlib.Path(tmp, "probe.cpp")
        deps = pathlib.Path(tmp, "probe.d")
        probe.write_text(probe_text)
        cmd = [cxx, "-std=c++17", "-E", "-P", "-MD", "-MF", str(deps), "-MT", "probe"]
        cmd += [f"-I{d}" for d in include_dirs] + [str(probe)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise InputError("preprocessing the CUDA headers failed:\n" + result.stderr
                             + "(the GL, EGL and VDPAU interop headers need libgl-dev, libegl-dev and"
                               " libvdpau-dev; scripts/setup.sh installs them)")
        headers = deps.read_text().replace("\\\n", " ").split(":", 1)[1].split()
        return result.stdout, [h for h in headers if h != str(probe)]


def extract_declarations(source: str, returns: str, prefix: str) -> dict[str, Prototype]:
    """Every declaration `<returns> <name>(...);` whose name starts with `prefix`, extern or not
    (cuda.h declares its functions inside one extern "C" block, CUDAAPI expanding to nothing)."""
    text = re.sub(r"\s+", " ", source)
    found: dict[str, Prototype] = {}
    pattern = re.compile(r"(?:^|[;{}])\s*(?:extern \"C\" )?" + re.escape(returns) + r"\s+(" + re.escape(prefix) + r"\w*)\s*\(")
    for match in pattern.finditer(text):
        depth, i = 0, match.end() - 1
        while True:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        if not DECLARATION_END.match(text, i + 1):
            continue
        found[match.group(1)] = Prototype(match.group(1), canonical_type(returns),
                                          parse_params(text[match.end():i]))
    return found


def is_pointer(c_type: str) -> bool:
    return "*" in c_type


def format_params(proto: Prototype) -> str:
    if not proto.params:
        return "void"
    return ", ".join(f"{p.type} /*{p.name}*/" if p.name else p.type for p in proto.params)
