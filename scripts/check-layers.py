#!/usr/bin/env python3
"""Fails when billing's modules import in a circle or a lower layer imports a higher one.

Reads every `crate::` and `super::` path of billing/src (in `use` lines and in code; comments, strings and the
`#[cfg(test)]` modules at the end of a file are left out), resolves each to the file of the module it names, and
checks two rules over the resulting file graph:

1. No circle: no file reaches itself through imports (between folders or inside one).
2. Layers: a file imports only from its own top-level module or from a layer below it, in the order of LAYERS.
   The leaves share the lowest layer and may use one another (rule 1 still forbids a circle among them).

docs/architecture.md explains the layers. A new top-level module must be added to LAYERS, or the check fails.

Usage: check-layers.py [SRC_DIR]   (default billing/src)
       check-layers.py --self-test  (runs the check on small fake trees: a clean one must pass, one with a circle
                                     and one with an upward import must fail)
"""

import re
import sys
import tempfile
from pathlib import Path

# Top to bottom. lib.rs is the crate root: `run` wires the layers together, so it may use any of them.
LAYERS = [
    ["lib"],
    ["http"],
    ["app"],
    ["ledger"],
    ["schema"],
    ["db"],
    ["config"],
    ["error", "healthcheck", "logging", "metrics", "models", "request_id", "shutdown", "text", "warning_limiter"],
]

USE = re.compile(r"\buse\s+([A-Za-z_{][^;]*);", re.S)
INLINE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
TESTS = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*mod\s+\w+\s*\{", re.M)


def strip(text):
    """The code without comments, string and char literals, and without the test module at the end of the file."""
    match = TESTS.search(text)
    if match:
        text = text[: match.start()]
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i : i + 4] + "  "):
            k = re.match(r"'(\\.|[^\\'])'", text[i:]).end()
            out.append("' '")
            i += k
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand(tree):
    """`a::{b, c::{d, self}}` -> [[a, b], [a, c, d], [a, c]] (an `as` rename and a `*` glob name their module)."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    paths = []

    def walk(prefix, part):
        depth, items, start = 0, [], 0
        for k, ch in enumerate(part):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(part[start:k])
                start = k + 1
        items.append(part[start:])
        for item in filter(None, items):
            if "{" in item:
                head, _, rest = item.partition("{")
                walk(prefix + [s for s in head.split("::") if s], rest[: rest.rfind("}")])
            else:
                segments = [s for s in item.split("::") if s and s not in ("self", "*")]
                paths.append(prefix + segments)

    walk([], tree)
    return paths


def modules(src):
    """Module path (tuple) -> file, for every .rs file under src but main.rs (the binary, outside the library)."""
    found = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        if rel.as_posix() == "main.rs":
            continue
        parts = list(rel.with_suffix("").parts)
        if parts == ["lib"]:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        found[tuple(parts)] = path
    return found


def resolve(segments, here, mods):
    """The module a path names: its longest prefix that is a module of the crate, from `here` for `super`/`self`."""
    base = list(here)
    head, rest = segments[0], segments[1:]
    if head not in ("crate", "super", "self"):
        # `use child::Item` in a module's own file names a child module; anything else is another crate.
        if tuple(base + [head]) not in mods:
            return None
        rest = segments
    elif head == "super":
        base = base[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif head == "crate":
        base = []
    for k in range(len(rest), -1, -1):
        candidate = tuple(base + rest[:k])
        if candidate in mods:
            return candidate
    return None


def edges(src):
    mods = modules(src)
    graph = {m: set() for m in mods}
    for here, path in mods.items():
        # `super` is the parent module whether the file is `a/b.rs` or `a/b/mod.rs`: both are module a::b.
        module = here
        code = strip(path.read_text(encoding="utf-8"))
        found = []
        for tree in USE.findall(code):
            found.extend(expand(tree))
        for head, tail in INLINE.findall(USE.sub("", code)):
            found.append([head] + [s for s in tail.split("::") if s])
        # A child module named in code without a `use` (`sqlstate::class_of(..)` in db/mod.rs).
        for child in {m[-1] for m in mods if m[:-1] == module and len(m) == len(module) + 1}:
            if re.search(r"(?<![:\w])" + child + r"::", USE.sub("", code)):
                found.append([child])
        for segments in found:
            if segments[0] == "self":
                segments = ["crate"] + list(module) + segments[1:]
            target = resolve(segments, module, mods)
            if target is not None and target != here:
                graph[here].add(target)
    return mods, graph


def layer_of(module):
    top = module[0] if module else "lib"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank, top
    return None, top


def circles(graph):
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(src):
    """The problems found in the tree at src, one line each."""
    mods, graph = edges(src)
    label = lambda m: str(mods[m].relative_to(src))  # noqa: E731
    problems = []
    for module in sorted(mods):
        rank, top = layer_of(module)
        if rank is None:
            problems.append(f"{label(module)}: top-level module `{top}` is in no layer: add it to LAYERS in "
                            f"scripts/check-layers.py (and to docs/architecture.md)")
    for module in sorted(graph):
        rank, top = layer_of(module)
        for target in sorted(graph[module]):
            target_rank, target_top = layer_of(target)
            if rank is None or target_rank is None or top == target_top:
                continue
            if target_rank < rank or (target_rank == rank and rank != len(LAYERS) - 1):
                problems.append(f"{label(module)} imports {label(target)}: `{top}` may not use `{target_top}`, "
                                f"a layer above it (order: {' > '.join('/'.join(n) for n in LAYERS)})")
    for component in circles(graph):
        problems.append(f"import circle among {len(component)} files: " + ", ".join(label(m) for m in component))
    return problems, sum(len(t) for t in graph.values()), len(mods)


def self_test():
    """Runs the check on fake trees; returns the failures of the check itself."""
    cases = {
        "clean": ({
            "lib.rs": "pub mod http;\npub mod db;\npub mod metrics;\nuse crate::http::server;\nuse std::fmt;\n",
            "http/mod.rs": "pub mod server;\n",
            "http/server.rs": "use crate::db::{self, Pool};\nuse crate::metrics;\n"
                              "// use crate::lib; a comment is no import\nfn f() { let s = \"crate::http\"; }\n",
            "db/mod.rs": "use crate::metrics::{self as m};\nfn g() { crate::metrics::count(); }\n",
            "metrics.rs": "pub fn count() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::db;\n}\n",
        }, None),
        "circle": ({
            "lib.rs": "pub mod db;\n",
            "db/mod.rs": "pub mod pool;\npub mod sql;\n",
            "db/pool.rs": "use super::sql::Query;\n",
            "db/sql.rs": "use crate::db::{\n    pool::{Pool, self},\n};\n",
        }, "import circle among 2 files: db/pool.rs, db/sql.rs"),
        "upward": ({
            "lib.rs": "pub mod http;\npub mod db;\n",
            "http/mod.rs": "",
            "db/mod.rs": "fn f() -> crate::http::Reply { todo!() }\n",
        }, "db/mod.rs imports http/mod.rs: `db` may not use `http`"),
        "circle through a child named in code": ({
            "lib.rs": "pub mod db;\n",
            "db/mod.rs": "pub mod sqlstate;\nfn f() { sqlstate::class_of(); }\n",
            "db/sqlstate.rs": "use crate::db::Pool;\n",
        }, "import circle among 2 files: db/mod.rs, db/sqlstate.rs"),
        "circle through a re-export": ({
            "lib.rs": "pub mod config;\n",
            "config/mod.rs": "pub mod tls;\npub use tls::Tls;\npub struct Error;\n",
            "config/tls.rs": "use crate::config::Error;\n",
        }, "import circle among 2 files: config/mod.rs, config/tls.rs"),
        "leaf circle": ({
            "lib.rs": "pub mod metrics;\npub mod logging;\n",
            "metrics.rs": "use crate::logging;\n",
            "logging.rs": "use crate::metrics::Counter;\n",
        }, "import circle among 2 files: logging.rs, metrics.rs"),
        "unknown module": ({
            "lib.rs": "pub mod gadgets;\n",
            "gadgets.rs": "",
        }, "top-level module `gadgets` is in no layer"),
    }
    failures = []
    for case, (files, expected) in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for rel, text in files.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(text, encoding="utf-8")
            problems, _, _ = check(root)
        if expected is None and problems:
            failures.append(f"self-test {case!r}: expected no problem, got {problems}")
        elif expected is not None and not any(expected in p for p in problems):
            failures.append(f"self-test {case!r}: expected a problem containing {expected!r}, got {problems}")
    return failures, len(cases)


def main(argv):
    if argv[1:] == ["--self-test"]:
        failures, count = self_test()
        for failure in failures:
            print(failure, file=sys.stderr)
        if failures:
            print("check-layers self-test FAILED: the layer check would not catch what it should", file=sys.stderr)
            return 1
        print(f"check-layers self-test: {count} fake trees judged as expected")
        return 0
    src = Path(argv[1] if len(argv) > 1 else "billing/src")
    if not (src / "lib.rs").is_file():
        print(f"check-layers: {src}/lib.rs not found", file=sys.stderr)
        return 2
    problems, count, files = check(src)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check-layers FAILED: {len(problems)} problem(s) in {src}; see docs/architecture.md for the layers",
              file=sys.stderr)
        return 1
    print(f"check-layers: {files} files, {count} imports between them, no circle, every import goes downward")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
