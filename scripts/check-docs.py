#!/usr/bin/env python3
"""Fails when the docs no longer say what billing's code does: reads the code's own lists and the docs, and names
each thing missing (or left behind) and where it belongs.

1. Settings. Every environment variable billing reads (a literal name given to `std::env::var`, `var_os`, `get`,
   `lookup`, `env`, `parse_number`/`parse_bool` anywhere in billing/src outside `#[cfg(test)]` modules, and
   RUST_LOG when env_logger reads its default variable) has a row in README's configuration table; where the code
   gives a literal default (and range), the row's Default column shows it (and its text the range, `MIN–MAX`). A
   row for a variable billing does not read is left behind. Every variable is named in a comment of
   charts/billing/values.yaml: beside its value when the chart sets it (templates/_pod.tpl), or where the chart says
   why it leaves it unset. A variable the chart sets for billing that billing does not read is left behind.
2. Metrics. Every metric name billing/src/metrics.rs defines (`pub const X: &str = "name"`) has a row in the metrics
   table (the first table under the `/metrics` heading) of docs/observability.md and docs/observability.ru.md, and
   the row of the database-errors metric names every `kind` label of DbErrorKind. A row for a metric the code does
   not define is left behind.
3. Error kinds. Every name ErrorCode::as_str gives (billing/src/error.rs) is in README's error table, with the
   status the code answers it with. A row for a kind the code does not have is left behind.
4. Layout. Every .rs file under billing/src is named in the module map of docs/architecture.md and of
   docs/architecture.ru.md (the tree under `billing/src`; a folder listed there covers its mod.rs) and in the
   `billing/` row of README's layout table (a file of a folder inside that folder's parentheses); every .rs file
   (or folder) of billing/tests is named in the `billing/tests/` row. An entry for a file that does not exist is
   left behind.
5. Translations. Every X.ru.md (at the top, in docs/, in charts/*/) has its English twin (X.md or X.en.md), and both
   have the same headings, level by level in the same order (headings inside code blocks do not count).

Usage: check-docs.py [ROOT]      (default: the repository this script is in)
       check-docs.py --self-test (runs the checks on a small fake repository: a clean one must pass, and each kind
                                  of drift, made in a copy of it, must be caught with its message)
"""

import re
import sys
import tempfile
from pathlib import Path

# Variables billing reads that are not its settings, and why they are not in README's table.
NOT_SETTINGS = {
    "HOME": "the home directory, for libpq's default ~/.postgresql/root.crt (README names that path)",
    "RUST_LOG_STYLE": "env_logger's own colour switch, not a billing setting",
}

# http::StatusCode's constants, for the status of each error kind.
STATUS = {
    "CONTINUE": 100, "SWITCHING_PROTOCOLS": 101, "PROCESSING": 102, "OK": 200, "CREATED": 201, "ACCEPTED": 202,
    "NON_AUTHORITATIVE_INFORMATION": 203, "NO_CONTENT": 204, "RESET_CONTENT": 205, "PARTIAL_CONTENT": 206,
    "MULTI_STATUS": 207, "ALREADY_REPORTED": 208, "IM_USED": 226, "MULTIPLE_CHOICES": 300,
    "MOVED_PERMANENTLY": 301, "FOUND": 302, "SEE_OTHER": 303, "NOT_MODIFIED": 304, "USE_PROXY": 305,
    "TEMPORARY_REDIRECT": 307, "PERMANENT_REDIRECT": 308, "BAD_REQUEST": 400, "UNAUTHORIZED": 401,
    "PAYMENT_REQUIRED": 402, "FORBIDDEN": 403, "NOT_FOUND": 404, "METHOD_NOT_ALLOWED": 405, "NOT_ACCEPTABLE": 406,
    "PROXY_AUTHENTICATION_REQUIRED": 407, "REQUEST_TIMEOUT": 408, "CONFLICT": 409, "GONE": 410,
    "LENGTH_REQUIRED": 411, "PRECONDITION_FAILED": 412, "PAYLOAD_TOO_LARGE": 413, "URI_TOO_LONG": 414,
    "UNSUPPORTED_MEDIA_TYPE": 415, "RANGE_NOT_SATISFIABLE": 416, "EXPECTATION_FAILED": 417, "IM_A_TEAPOT": 418,
    "MISDIRECTED_REQUEST": 421, "UNPROCESSABLE_ENTITY": 422, "LOCKED": 423, "FAILED_DEPENDENCY": 424,
    "TOO_EARLY": 425, "UPGRADE_REQUIRED": 426, "PRECONDITION_REQUIRED": 428, "TOO_MANY_REQUESTS": 429,
    "REQUEST_HEADER_FIELDS_TOO_LARGE": 431, "UNAVAILABLE_FOR_LEGAL_REASONS": 451, "INTERNAL_SERVER_ERROR": 500,
    "NOT_IMPLEMENTED": 501, "BAD_GATEWAY": 502, "SERVICE_UNAVAILABLE": 503, "GATEWAY_TIMEOUT": 504,
    "HTTP_VERSION_NOT_SUPPORTED": 505, "VARIANT_ALSO_NEGOTIATES": 506, "INSUFFICIENT_STORAGE": 507,
    "LOOP_DETECTED": 508, "NOT_EXTENDED": 510, "NETWORK_AUTHENTICATION_REQUIRED": 511,
}

TESTS_MODULE = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*mod\s+\w+\s*\{", re.M)
NAME = r'"([A-Z][A-Z0-9_]*)"'
ENV_CALL = re.compile(r"\b(?:var|var_os|get|lookup|env)\s*\(\s*" + NAME)
ENV_PARSE_NAME = re.compile(r"\bparse_\w+\s*\(\s*&?\w+\s*,\s*" + NAME)
# parse_number(&get, "NAME", default, min, max) and parse_bool(&get, "NAME", default): the literals among them.
ARG = r"\s*([^,()]+?)\s*"
ENV_PARSE = re.compile(r"\bparse_\w+\s*\(\s*&?\w+\s*,\s*" + NAME + r"\s*," + ARG + r"(?:," + ARG + r"," + ARG + r")?\)")
LITERAL = re.compile(r"^(?:\d[\d_]*|true|false)$")


def code_of(path):
    """A Rust file without its `#[cfg(test)]` module and without its comment lines."""
    text = path.read_text(encoding="utf-8")
    match = TESTS_MODULE.search(text)
    if match:
        text = text[: match.start()]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def cells(line):
    """The cells of a Markdown table row; a `|` inside backticks or escaped does not split."""
    out, cur, in_code, prev = [], [], False, ""
    for ch in line.strip():
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code and prev != "\\":
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        prev = ch
    out.append("".join(cur).strip())
    return out[1:-1] if len(out) >= 2 else out


def table(lines, header, start=0):
    """The rows (lists of cells) of the first table at or after line `start` whose header row matches `header`."""
    for i in range(start, len(lines)):
        if lines[i].startswith("|") and re.match(header, lines[i]):
            rows = []
            for line in lines[i + 2:]:
                if not line.startswith("|"):
                    break
                rows.append(cells(line))
            return rows
    return None


def ticked(text):
    return re.findall(r"`([^`]+)`", text)


def first_ticked(text):
    found = ticked(text)
    return found[0] if found else None


def read(root, rel, problems):
    path = root / rel
    if not path.is_file():
        problems.append(f"{rel}: not found (the docs check reads it)")
        return ""
    return path.read_text(encoding="utf-8")


# 1. Settings ----------------------------------------------------------------------------------------------------

def env_vars(src):
    """Variable -> (file it is read in, default or None, min or None, max or None)."""
    found = {}
    for path in sorted(src.rglob("*.rs")):
        code = code_of(path)
        rel = path.relative_to(src.parent.parent).as_posix()
        for name in ENV_CALL.findall(code) + ENV_PARSE_NAME.findall(code):
            found.setdefault(name, (rel, None, None, None))
        for name, default, low, high in ENV_PARSE.findall(code):
            values = [v if LITERAL.match(v or "") else None for v in (default, low, high)]
            values = [v.replace("_", "") if v else None for v in values]
            found[name] = (rel, *values)
        if "env_logger::Env::default()" in code:
            found.setdefault("RUST_LOG", (rel, None, None, None))
    return found


def check_settings(root, problems):
    variables = env_vars(root / "billing/src")
    if not variables:
        problems.append("billing/src: no environment variable read found: the settings check would see nothing")
    lines = read(root, "README.md", problems).splitlines()
    rows = table(lines, r"^\|\s*Variable\s*\|\s*Default\s*\|")
    if rows is None:
        problems.append("README.md: no configuration table (header `| Variable | Default | Meaning |`)")
        rows = []
    documented = {}
    for row in rows:
        name = first_ticked(row[0]) if row else None
        if name:
            documented[name] = row
    for name, (where, default, low, high) in sorted(variables.items()):
        if name in NOT_SETTINGS:
            continue
        row = documented.get(name)
        if row is None:
            problems.append(f"README.md: the configuration table has no row for {name} (read in {where})")
            continue
        if default is not None and (len(row) < 2 or f"`{default}`" not in row[1]):
            problems.append(f"README.md: the configuration row of {name} should give its default `{default}` "
                            f"(as {where} does), not {row[1] if len(row) > 1 else 'nothing'!r}")
        if low is not None and high is not None:
            text = " ".join(row[1:])
            if not re.search(rf"(?<![\d,]){low}\s*[–-]\s*{high}(?![\d,])", text):
                problems.append(f"README.md: the configuration row of {name} should give its range {low}–{high} "
                                f"(as {where} does)")
    for name in sorted(set(documented) - set(variables)):
        problems.append(f"README.md: the configuration table has a row for {name}, which billing does not read "
                        f"(billing/src): remove the row, or the code lost it")

    values = read(root, "charts/billing/values.yaml", problems)
    comments = "\n".join(line for line in values.splitlines() if line.lstrip().startswith("#"))
    pod = read(root, "charts/billing/templates/_pod.tpl", problems)
    chart_sets = set(re.findall(r"^\s*-\s*name:\s*([A-Z][A-Z0-9_]*)\s*$", pod, re.M))
    for name in sorted(variables):
        if name in NOT_SETTINGS or re.search(rf"\b{name}\b", comments):
            continue
        if name in chart_sets:
            problems.append(f"charts/billing/values.yaml: no comment names {name}, which templates/_pod.tpl sets: "
                            f"name it in the comment of the value it comes from")
        else:
            problems.append(f"charts/billing/values.yaml: no comment names {name}, which the chart leaves unset: "
                            f"say why (extraEnv's comment is the place) or set it")
    for name in sorted(chart_sets - set(variables)):
        problems.append(f"charts/billing/templates/_pod.tpl: sets {name} for billing, which billing does not read")
    return len(variables)


# 2. Metrics -----------------------------------------------------------------------------------------------------

def metric_table(text):
    """Metric name -> its row's text, from the first table under the heading that names /metrics."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("#") and "/metrics" in line), None)
    if start is None:
        return None
    rows = table(lines, r"^\|", start)
    if rows is None:
        return None
    return {first_ticked(row[0]): " | ".join(row) for row in rows if row and first_ticked(row[0])}


def check_metrics(root, problems):
    code = code_of(root / "billing/src/metrics.rs") if (root / "billing/src/metrics.rs").is_file() else ""
    consts = dict(re.findall(r'\bconst\s+([A-Z][A-Z0-9_]*)\s*:\s*&str\s*=\s*"([a-z_][a-z0-9_]*)"', code))
    names = set(consts.values())
    if not names:
        problems.append("billing/src/metrics.rs: no metric name found (`pub const X: &str = \"name\";`)")
    kinds = re.findall(r'DbErrorKind::\w+\s*=>\s*"([a-z_]+)"', code)
    # The metric whose `kind` label DbErrorKind's names are.
    errors_metric = consts.get("DATABASE_ERRORS")
    if kinds and errors_metric is None:
        problems.append("billing/src/metrics.rs: DbErrorKind has kinds but no DATABASE_ERRORS metric names them")
    for rel in ("docs/observability.md", "docs/observability.ru.md"):
        rows = metric_table(read(root, rel, problems))
        if rows is None:
            problems.append(f"{rel}: no metrics table (a table under a heading that names /metrics)")
            continue
        for name in sorted(names - set(rows)):
            problems.append(f"{rel}: the metrics table has no row for {name} (billing/src/metrics.rs)")
        for name in sorted(set(rows) - names):
            problems.append(f"{rel}: the metrics table has a row for {name}, which billing/src/metrics.rs does not "
                            f"define: remove the row, or the code lost it")
        if errors_metric in rows:
            for kind in kinds:
                if f"`{kind}`" not in rows[errors_metric]:
                    problems.append(f"{rel}: the row of {errors_metric} does not name its kind `{kind}` "
                                    f"(DbErrorKind in billing/src/metrics.rs)")
    return len(names)


# 3. Error kinds -------------------------------------------------------------------------------------------------

def check_errors(root, problems):
    path = root / "billing/src/error.rs"
    code = code_of(path) if path.is_file() else ""
    names = dict(re.findall(r'ErrorCode::(\w+)\s*=>\s*"([a-z_][a-z0-9_]*)"', code))
    if not names:
        problems.append("billing/src/error.rs: no error kind found (`ErrorCode::X => \"name\"` in as_str)")
    statuses = {}
    for status, variant in re.findall(r"StatusCode::([A-Z_]+)\s*,\s*ErrorCode::(\w+)", code):
        if status not in STATUS:
            problems.append(f"billing/src/error.rs: StatusCode::{status} is not in STATUS of scripts/check-docs.py")
            continue
        statuses.setdefault(variant, set()).add(STATUS[status])
    lines = read(root, "README.md", problems).splitlines()
    rows = table(lines, r"^\|\s*Situation\s*\|\s*Status\s*\|")
    if rows is None:
        problems.append("README.md: no error table (header `| Situation | Status | `error` |`)")
        rows = []
    documented = {}
    for row in rows:
        kind = first_ticked(row[2]) if len(row) > 2 else None
        if kind:
            status = re.search(r"\b\d{3}\b", row[1])
            documented.setdefault(kind, set()).add(int(status.group()) if status else None)
    for variant, name in sorted(names.items(), key=lambda item: item[1]):
        if name not in documented:
            problems.append(f"README.md: the error table has no row for `{name}` (ErrorCode::{variant}, "
                            f"billing/src/error.rs)")
            continue
        for status in sorted(documented[name] - statuses.get(variant, documented[name])):
            problems.append(f"README.md: the error table answers `{name}` with {status}; billing/src/error.rs "
                            f"answers it with {', '.join(map(str, sorted(statuses[variant])))}")
    for name in sorted(set(documented) - set(names.values())):
        problems.append(f"README.md: the error table has a row for `{name}`, which ErrorCode (billing/src/error.rs) "
                        f"does not have: remove the row, or the code lost it")
    return len(names)


# 4. Layout ------------------------------------------------------------------------------------------------------

TREE_ENTRY = re.compile(r"^([│├└─ ]*)([A-Za-z_][\w.]*?(?:\.rs|/))(?=\s|$)")


def tree_files(text):
    """Paths named by the module map (the code block that starts with `billing/src`), and the folders it names."""
    block = re.search(r"```\w*\nbilling/src/?\n(.*?)```", text, re.S)
    if block is None:
        return None, None
    files, folders, stack = set(), set(), {}
    for line in block.group(1).splitlines():
        prefix = re.match(r"^[│├└─ ]*", line).group()
        depth = len(prefix) // 4
        match = TREE_ENTRY.match(line)
        rest = line[len(prefix):]
        if match is None:
            # A group without a folder of its own (the leaves): what it holds is at the top.
            if rest and re.match(r"^[a-z]+\s{2,}", rest) and "─" in prefix:
                stack[depth] = None
                for k in [k for k in stack if k > depth]:
                    del stack[k]
            continue
        name = match.group(2)
        parents = [stack[k] for k in sorted(stack) if k < depth and stack[k]]
        for k in [k for k in stack if k >= depth]:
            del stack[k]
        if name.endswith("/"):
            stack[depth] = name[:-1]
            folders.add("/".join(parents + [name[:-1]]))
        else:
            files.add("/".join(parents + [name]))
    return files, folders


def segment(row, folder):
    """The text of the parentheses right after `src/<folder>/` in the layout row, or None."""
    token = f"`src/{folder}/`"
    at = row.find(token)
    if at < 0:
        return None
    open_at = row.find("(", at + len(token))
    if open_at < 0 or row[at + len(token):open_at].strip():
        return None
    depth = 0
    for i in range(open_at, len(row)):
        depth += {"(": 1, ")": -1}.get(row[i], 0)
        if depth == 0:
            return row[open_at + 1:i]
    return row[open_at + 1:]


def check_layout(root, problems):
    src, tests = root / "billing/src", root / "billing/tests"
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.rs"))
    if not files:
        problems.append("billing/src: no .rs file found: the layout check would see nothing")
    for rel in ("docs/architecture.md", "docs/architecture.ru.md"):
        named, folders = tree_files(read(root, rel, problems))
        if named is None:
            problems.append(f"{rel}: no module map (a code block whose first line is billing/src)")
            continue
        for f in files:
            folder = f.rsplit("/", 1)[0] if "/" in f else None
            if f not in named and not (f.endswith("/mod.rs") and folder in folders):
                problems.append(f"{rel}: the module map does not name billing/src/{f}")
        for f in sorted(named - set(files)):
            problems.append(f"{rel}: the module map names billing/src/{f}, which does not exist")

    lines = read(root, "README.md", problems).splitlines()
    rows = table(lines, r"^\|\s*Path\s*\|")
    if rows is None:
        problems.append("README.md: no layout table (header `| Path | What it holds |`)")
        return len(files)
    by_path = {first_ticked(row[0]): " | ".join(row[1:]) for row in rows if row and first_ticked(row[0])}
    src_row = by_path.get("billing/")
    if src_row is None:
        problems.append("README.md: the layout table has no `billing/` row")
    else:
        top = src_row
        for folder in sorted({f.split("/")[0] for f in files if "/" in f}):
            inside = segment(src_row, folder)
            if inside is None:
                problems.append(f"README.md: the `billing/` layout row does not name `src/{folder}/` followed by "
                                f"its files in parentheses")
                continue
            top = top.replace(inside, "")
            for f in (f for f in files if f.startswith(folder + "/")):
                base = f[len(folder) + 1:]
                if base != "mod.rs" and f"`{base}`" not in inside:
                    problems.append(f"README.md: the `billing/` layout row does not name `{base}` inside "
                                    f"`src/{folder}/`'s parentheses (billing/src/{f})")
        for f in (f for f in files if "/" not in f):
            if f"`src/{f}`" not in top and f"`{f}`" not in top:
                problems.append(f"README.md: the `billing/` layout row does not name `{f}` (billing/src/{f})")
    tests_row = by_path.get("billing/tests/")
    test_names = sorted([p.stem for p in tests.glob("*.rs")] + [p.name + "/" for p in tests.iterdir() if p.is_dir()]
                        if tests.is_dir() else [])
    if tests_row is None:
        problems.append("README.md: the layout table has no `billing/tests/` row")
    else:
        for name in test_names:
            if f"`{name}`" not in tests_row and f"`{name}.rs`" not in tests_row:
                problems.append(f"README.md: the `billing/tests/` layout row does not name `{name}` "
                                f"(billing/tests/{name if name.endswith('/') else name + '.rs'})")
        for name in ticked(tests_row):
            if re.fullmatch(r"[a-z_]+/?(\.rs)?", name) and name.removesuffix(".rs") not in test_names:
                problems.append(f"README.md: the `billing/tests/` layout row names `{name}`, which is not in "
                                f"billing/tests")
    return len(files) + len(test_names)


# 5. Translations ------------------------------------------------------------------------------------------------

def headings(text):
    """(level, text, line number) of every ATX heading outside fenced code blocks."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        marker = re.match(r"^\s{0,3}(`{3,}|~{3,})", line)
        if marker:
            if fence is None:
                fence = marker.group(1)[0]
            elif marker.group(1)[0] == fence:
                fence = None
            continue
        if fence is None:
            match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
            if match:
                out.append((len(match.group(1)), match.group(2), number))
    return out


def check_translations(root, problems):
    russian = sorted(list(root.glob("*.ru.md")) + list(root.glob("docs/*.ru.md")) + list(root.glob("charts/*/*.ru.md")))
    pairs = 0
    for ru in russian:
        stem = ru.name[: -len(".ru.md")]
        english = next((p for p in (ru.with_name(stem + ".md"), ru.with_name(stem + ".en.md")) if p.is_file()), None)
        rel_ru = ru.relative_to(root).as_posix()
        if english is None:
            problems.append(f"{rel_ru}: no English twin ({stem}.md or {stem}.en.md)")
            continue
        pairs += 1
        rel_en = english.relative_to(root).as_posix()
        en, ru_h = headings(english.read_text(encoding="utf-8")), headings(ru.read_text(encoding="utf-8"))
        if [h[0] for h in en] == [h[0] for h in ru_h]:
            continue
        count = lambda hs: ", ".join(f"h{lvl}: {sum(1 for h in hs if h[0] == lvl)}"  # noqa: E731
                                     for lvl in sorted({h[0] for h in en + ru_h}))
        k = next(i for i in range(max(len(en), len(ru_h)))
                 if i >= len(en) or i >= len(ru_h) or en[i][0] != ru_h[i][0])
        show = lambda hs, rel: (f"{rel}:{hs[k][2]} {'#' * hs[k][0]} {hs[k][1]}" if k < len(hs)  # noqa: E731
                                else f"{rel}: no heading")
        problems.append(f"{rel_en} and {rel_ru} have different sections ({count(en)} against {count(ru_h)}); "
                        f"heading {k + 1} differs: {show(en, rel_en)} / {show(ru_h, rel_ru)}")
    if not pairs:
        problems.append("no English/Russian pair of docs found: the translation check would see nothing")
    return pairs


def check(root):
    problems = []
    counts = (
        check_settings(root, problems),
        check_metrics(root, problems),
        check_errors(root, problems),
        check_layout(root, problems),
        check_translations(root, problems),
    )
    return problems, counts


# Self-test ------------------------------------------------------------------------------------------------------

FAKE = {
    "billing/src/lib.rs": "pub mod config;\npub mod error;\npub mod metrics;\n",
    "billing/src/main.rs": "fn main() {\n    let f = std::env::var(\"LOG_FORMAT\").ok();\n"
                           "    env_logger::Builder::from_env(env_logger::Env::default());\n}\n",
    "billing/src/config/mod.rs": (
        "//! Reads get(\"COMMENTED_OUT\") nowhere.\n"
        "pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) {\n"
        "    let url = get(\"DATABASE_URL\");\n"
        "    let home = lookup(\"HOME\");\n"
        "    let t = parse_number(&get, \"DATABASE_TIMEOUT_SECS\", 5, 1, 300)?;\n"
        "    let c = parse_number(\n        &get,\n        \"GETALL_MAX_CONCURRENT\",\n        quarter,\n        1,\n"
        "        u64::from(pool),\n    )?;\n"
        "    let m = parse_bool(&get, \"METRICS_ENABLED\", true)?;\n"
        "    let h = parse_number(&get, \"MAX_HEADER_BYTES\", 16_384, 8_192, 1_048_576)?;\n"
        "}\n#[cfg(test)]\nmod tests {\n"
        "    fn t() { config(&[(\"ONLY_IN_TESTS\", \"1\")]); get(\"ONLY_IN_TESTS\"); }\n}\n"),
    "billing/src/config/error.rs": "pub struct ConfigError;\n",
    "billing/src/metrics.rs": (
        "pub const HTTP_REQUESTS: &str = \"http_requests_total\";\n"
        "pub const DATABASE_ERRORS: &str = \"billing_database_errors_total\";\n"
        "pub fn label(k: DbErrorKind) -> &'static str {\n    match k {\n"
        "        DbErrorKind::Timeout => \"timeout\",\n        DbErrorKind::Other => \"other\",\n    }\n}\n"),
    "billing/src/error.rs": (
        "impl ErrorCode {\n    pub fn as_str(self) -> &'static str {\n        match self {\n"
        "            ErrorCode::NotFound => \"not_found\",\n            ErrorCode::Busy => \"busy\",\n"
        "        }\n    }\n}\n"
        "fn a() { Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, m) }\n"
        "fn b() { Self::new(\n    StatusCode::SERVICE_UNAVAILABLE,\n    ErrorCode::Busy,\n    m) }\n"),
    "billing/tests/api.rs": "mod common;\n",
    "billing/tests/common/mod.rs": "",
    "billing/tests/api.proptest-regressions": "cc 00\n",
    "README.md": (
        "# fake\n\n## Errors\n\n| Situation | Status | `error` |\n|---|---|---|\n"
        "| unknown id | 404 | `not_found` |\n| too many | 503 (+ `Retry-After: 1`) | `busy` |\n"
        "| headers too large | 431 | — |\n\n"
        "## Configuration\n\n| Variable | Default | Meaning |\n|---|---|---|\n"
        "| `DATABASE_URL` | (required) | `postgres://a\\|b` |\n"
        "| `DATABASE_TIMEOUT_SECS` | `5` | Bound on queries (1–300). |\n"
        "| `GETALL_MAX_CONCURRENT` | a quarter | (1–`DATABASE_POOL_SIZE`) |\n"
        "| `METRICS_ENABLED` | `true` | off: 404 |\n"
        "| `MAX_HEADER_BYTES` | `16384` | Most bytes (8192–1048576). |\n"
        "| `RUST_LOG` | `info` | filter |\n| `LOG_FORMAT` | `text` | text or json |\n\n"
        "```sh\n# not a heading\n```\n\n## Layout\n\n| Path | What it holds |\n|---|---|\n"
        "| `billing/` | `src/main.rs`, `src/lib.rs`; `src/config/` (environment; `error.rs`: ConfigError); "
        "leaves: `error.rs`, `metrics.rs` |\n"
        "| `billing/tests/` | tests (`api`; `common/` helpers) |\n"),
    "docs/observability.md": (
        "# Observability\n\n## `GET /metrics`\n\n| Metric | Type | Meaning |\n|---|---|---|\n"
        "| `http_requests_total` | counter | requests |\n"
        "| `billing_database_errors_total` | counter | `timeout`, `other` |\n\n## Logs\n\n### JSON\n"),
    "docs/observability.ru.md": (
        "# Наблюдаемость\n\n## `GET /metrics`\n\n| Метрика | Тип | Смысл |\n|---|---|---|\n"
        "| `http_requests_total` | counter | запросы |\n"
        "| `billing_database_errors_total` | counter | `timeout`, `other` |\n\n```sh\n# comment\n```\n"
        "## Логи\n\n### JSON\n"),
    "docs/walkthrough.en.md": "# Walkthrough\n\n## Task 1\n",
    "docs/walkthrough.ru.md": "# Прохождение\n\n## Задание 1\n",
    "docs/architecture.md": (
        "# Architecture\n\n## Map\n\n```text\nbilling/src\n"
        "├── main.rs      the binary\n├── lib.rs       run()\n"
        "│\n├── config/      LAYER 1\n"
        "│   ├── mod.rs   Config\n│   └── error.rs ConfigError\n│\n"
        "└── leaves       LAYER 2\n    error.rs     ApiError\n    metrics.rs   metrics, with a\n"
        "                 continued description\n```\n"),
    "charts/billing/values.yaml": (
        "config:\n  # -- DATABASE_TIMEOUT_SECS: how long.\n  databaseTimeoutSecs: 5\n"
        "  # -- RUST_LOG filter.\n  rustLog: info\n  # -- LOG_FORMAT: text or json.\n  logFormat: text\n"
        "  # -- MAX_HEADER_BYTES: most bytes.\n  maxHeaderBytes: 16384\n"
        "# -- Extra environment variables, e.g. GETALL_MAX_CONCURRENT.\nextraEnv: []\n"
        "metrics:\n  # -- METRICS_ENABLED for billing.\n  enabled: true\n"
        "externalDatabase:\n  # -- The whole DATABASE_URL.\n  url: \"\"\n"),
    "charts/billing/templates/_pod.tpl": (
        "containers:\n  - name: billing\n    env:\n      - name: DATABASE_URL\n        value: x\n"
        "      - name: DATABASE_TIMEOUT_SECS\n      - name: RUST_LOG\n      - name: LOG_FORMAT\n"
        "      - name: MAX_HEADER_BYTES\n      - name: METRICS_ENABLED\n"),
}
FAKE["docs/architecture.ru.md"] = FAKE["docs/architecture.md"].replace("# Architecture", "# Архитектура")


def edit(path, old, new):
    return (path, old, new)


SELF_TESTS = [
    ("a new setting not in README",
     [edit("billing/src/config/mod.rs", "    let url", "    let k = parse_bool(&get, \"IDEMPOTENCY_KEY_REQUIRED\", "
                                                     "false)?;\n    let url")],
     "README.md: the configuration table has no row for IDEMPOTENCY_KEY_REQUIRED"),
    ("a variable read with std::env::var outside config/",
     [edit("billing/src/main.rs", "fn main() {", "fn main() {\n    let s = std::env::var(\"SOME_SWITCH\");")],
     "README.md: the configuration table has no row for SOME_SWITCH (read in billing/src/main.rs)"),
    ("a default that changed",
     [edit("billing/src/config/mod.rs", "\"DATABASE_TIMEOUT_SECS\", 5,", "\"DATABASE_TIMEOUT_SECS\", 7,")],
     "should give its default `7`"),
    ("a range that changed",
     [edit("billing/src/config/mod.rs", "16_384, 8_192, 1_048_576", "16_384, 4_096, 1_048_576")],
     "MAX_HEADER_BYTES should give its range 4096–1048576"),
    ("a README row for a variable the code no longer reads",
     [edit("billing/src/main.rs", "std::env::var(\"LOG_FORMAT\")", "None::<String>")],
     "has a row for LOG_FORMAT, which billing does not read"),
    ("a chart-set variable values.yaml does not name",
     [edit("charts/billing/values.yaml", "# -- LOG_FORMAT: text or json.", "# -- text or json.")],
     "values.yaml: no comment names LOG_FORMAT, which templates/_pod.tpl sets"),
    ("a variable the chart leaves unset without saying why",
     [edit("charts/billing/values.yaml", "e.g. GETALL_MAX_CONCURRENT.", "e.g. something.")],
     "values.yaml: no comment names GETALL_MAX_CONCURRENT, which the chart leaves unset"),
    ("the chart sets a variable billing does not read",
     [edit("charts/billing/templates/_pod.tpl", "      - name: RUST_LOG\n",
           "      - name: RUST_LOG\n      - name: DATABASE_TIMEOUT\n")],
     "_pod.tpl: sets DATABASE_TIMEOUT for billing, which billing does not read"),
    ("a new metric missing from the Russian doc",
     [edit("billing/src/metrics.rs", "pub const HTTP",
           "pub const REPLAYS: &str = \"billing_idempotent_replays_total\";\npub const HTTP"),
      edit("docs/observability.md", "| `http_requests_total`", "| `billing_idempotent_replays_total` | c | r |\n"
                                                               "| `http_requests_total`")],
     "docs/observability.ru.md: the metrics table has no row for billing_idempotent_replays_total"),
    ("a metric row left behind",
     [edit("docs/observability.md", "| `http_requests_total`", "| `billing_gone_total` | c | r |\n"
                                                               "| `http_requests_total`")],
     "docs/observability.md: the metrics table has a row for billing_gone_total"),
    ("a new database-error kind",
     [edit("billing/src/metrics.rs", "        DbErrorKind::Other", "        DbErrorKind::Lost => \"lost\",\n"
                                                                     "        DbErrorKind::Other")],
     "does not name its kind `lost`"),
    ("a new error kind not in README",
     [edit("billing/src/error.rs", "            ErrorCode::Busy", "            ErrorCode::KeyReused => "
                                                                     "\"idempotency_key_reused\",\n"
                                                                     "            ErrorCode::Busy")],
     "README.md: the error table has no row for `idempotency_key_reused`"),
    ("an error kind's status that changed",
     [edit("billing/src/error.rs", "StatusCode::NOT_FOUND", "StatusCode::GONE")],
     "the error table answers `not_found` with 404; billing/src/error.rs answers it with 410"),
    ("an error row left behind",
     [edit("README.md", "| unknown id | 404 | `not_found` |", "| unknown id | 404 | `not_found` |\n"
                                                               "| old | 400 | `gone_kind` |")],
     "has a row for `gone_kind`, which ErrorCode"),
    ("a new source file missing from the module maps",
     [("billing/src/config/idempotency.rs", None, "")],
     "docs/architecture.md: the module map does not name billing/src/config/idempotency.rs"),
    ("a new source file missing from README's layout row",
     [("billing/src/config/idempotency.rs", None, "")],
     "does not name `idempotency.rs` inside `src/config/`'s parentheses"),
    ("a file named only in another folder's parentheses",
     [edit("README.md", "leaves: `error.rs`, `metrics.rs`", "leaves: `metrics.rs`")],
     "the `billing/` layout row does not name `error.rs` (billing/src/error.rs)"),
    ("a module-map entry left behind",
     [edit("docs/architecture.ru.md", "    metrics.rs   metrics", "    gone.rs      old\n    metrics.rs   metrics")],
     "docs/architecture.ru.md: the module map names billing/src/gone.rs, which does not exist"),
    ("a new test file missing from README",
     [("billing/tests/replication.rs", None, "mod common;\n")],
     "the `billing/tests/` layout row does not name `replication` (billing/tests/replication.rs)"),
    ("a Russian doc that lost a section",
     [edit("docs/observability.ru.md", "\n### JSON\n", "\n")],
     "docs/observability.md and docs/observability.ru.md have different sections (h1: 1, h2: 2, h3: 1 against "
     "h1: 1, h2: 2, h3: 0)"),
    ("a heading at another level",
     [edit("docs/walkthrough.ru.md", "## Задание 1", "### Задание 1")],
     "heading 2 differs: docs/walkthrough.en.md:3 ## Task 1 / docs/walkthrough.ru.md:3 ### Задание 1"),
    ("a Russian doc without its English twin",
     [("docs/benchmarks.ru.md", None, "# Замеры\n")],
     "docs/benchmarks.ru.md: no English twin"),
]


def self_test():
    failures = []

    def build(root, changes):
        for rel, text in FAKE.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text, encoding="utf-8")
        for rel, old, new in changes:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if old is None:
                path.write_text(new, encoding="utf-8")
                continue
            text = path.read_text(encoding="utf-8")
            if text.count(old) != 1:
                failures.append(f"self-test: {old!r} is not once in fake {rel}")
            path.write_text(text.replace(old, new), encoding="utf-8")

    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), [])
        problems, counts = check(Path(tmp))
        if problems:
            failures.append(f"self-test 'clean': expected no problem, got {problems}")
        if counts[0] != 8:  # ONLY_IN_TESTS and COMMENTED_OUT are not read; HOME and RUST_LOG are
            failures.append(f"self-test 'clean': expected 8 variables read, found {counts[0]}")
    for case, changes, expected in SELF_TESTS:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp), changes)
            problems, _ = check(Path(tmp))
        if not any(expected in p for p in problems):
            failures.append(f"self-test {case!r}: expected a problem containing {expected!r}, got {problems}")
    return failures, len(SELF_TESTS) + 1


def main(argv):
    if argv[1:] == ["--self-test"]:
        failures, count = self_test()
        for failure in failures:
            print(failure, file=sys.stderr)
        if failures:
            print("check-docs self-test FAILED: the docs check would not catch what it should", file=sys.stderr)
            return 1
        print(f"check-docs self-test: {count} fake repositories judged as expected")
        return 0
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    if not (root / "billing/src/lib.rs").is_file():
        print(f"check-docs: {root}/billing/src/lib.rs not found", file=sys.stderr)
        return 2
    problems, (variables, metrics, kinds, files, pairs) = check(root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check-docs FAILED: {len(problems)} place(s) where the docs no longer say what the code does",
              file=sys.stderr)
        return 1
    print(f"check-docs: {variables} environment variables, {metrics} metrics, {kinds} error kinds, {files} source and "
          f"test files, {pairs} English/Russian pairs: all documented, nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
