#!/usr/bin/env python3
"""File-level import graph of the library (src/): which source file names which.

Follows `use crate::..`, `use super::..`, `use self::..` and inline `crate::a::b::` paths,
resolving each to the deepest existing file. Prints every import cycle (strongly connected
component of more than one file), then `OK` if none is larger than --max (default 3: a tightly
coupled trio). Exit status 1 when a larger cycle exists. Usage: scripts/import-graph.py [--max N]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
SKIP: set = set()


def module_path(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def files():
    out = {}
    for d, _, fs in os.walk(ROOT):
        for f in fs:
            if f.endswith(".rs"):
                rel = os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
                if rel not in SKIP:
                    out[tuple(module_path(rel))] = rel
    return out


def strip_tests(src):
    # Test modules may import anything, and comments (doc links) import nothing; the layering
    # is about the library's own code.
    m = re.search(r"#\[cfg\((all\()?test[,)]", src)
    src = src[: m.start()] if m else src
    return re.sub(r"//[^\n]*", "", src)


def resolve(mods, path):
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return mods[tuple(path[:n])]
    return None


def expand_groups(src):
    """`a::b::{c, d::e}` becomes `a::b::c a::b::d::e` (one level of braces at a time)."""
    group = re.compile(r"((?:\b\w+::)+)\{([^{}]*)\}")
    while True:
        new = group.sub(
            lambda m: " ".join(m.group(1) + item.strip() for item in m.group(2).split(",") if item.strip()),
            src,
        )
        if new == src:
            return src
        src = new


def inline_modules(src):
    """(start, end, name) of every inline `mod name { ... }` block."""
    spans = []
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", src):
        depth, i = 1, m.end()
        while i < len(src) and depth:
            depth += {"{": 1, "}": -1}.get(src[i], 0)
            i += 1
        spans.append((m.start(), i, m.group(1)))
    return spans


def imports(mods, key, src):
    spans = inline_modules(src)
    found = set()
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)+)", src):
        # The module the path is written in: the file's, plus any inline `mod x { .. }` around it.
        module = list(key) + [n for (a, b, n) in spans if a <= m.start() < b]
        head, tail = m.group(1), [p for p in m.group(2).split("::") if p]
        if head == "crate":
            path = tail
        elif head == "self":
            path = module + tail
        else:
            up = module[:-1]
            while tail and tail[0] == "super":
                tail = tail[1:]
                up = up[:-1]
            path = up + tail
        target = resolve(mods, path)
        if target and target != mods[key]:
            found.add(target)
    # Paths that start with a child module's name (`use elementwise::binary;`).
    children = set(re.findall(r"\bmod\s+(\w+)\s*;", src))
    for m in re.finditer(r"(?<![:\w])(\w+)((?:::\w+)+)", src):
        if m.group(1) in children:
            path = list(key) + [m.group(1)] + [p for p in m.group(2).split("::") if p]
            target = resolve(mods, path)
            if target and target != mods[key]:
                found.add(target)
    return found


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    limit = 3
    if "--max" in sys.argv:
        limit = int(sys.argv[sys.argv.index("--max") + 1])
    mods = files()
    graph = {}
    for key, rel in mods.items():
        with open(os.path.join(ROOT, rel)) as f:
            graph[rel] = imports(mods, key, expand_groups(strip_tests(f.read())))
    worst = 0
    for comp in sccs(graph):
        if len(comp) > 1:
            worst = max(worst, len(comp))
            print(f"cycle of {len(comp)}: {', '.join(sorted(comp))}")
            if "--edges" in sys.argv:
                for a in sorted(comp):
                    inner = sorted(b for b in graph[a] if b in comp)
                    print(f"  {a} -> {', '.join(inner)}")
    print(f"{len(graph)} files; largest cycle {worst}")
    if worst > limit:
        print(f"FAIL: a cycle larger than {limit} files")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
