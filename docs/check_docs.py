#!/usr/bin/env python3
"""Checks that the operator documentation in docs/ still matches the code.

Run from anywhere: `python3 docs/check_docs.py` (CI runs it from .ci/run).
It reads the Rust sources as text (no build needed) and fails, listing every
problem, when:

1. docs/openapi.yaml is not a valid OpenAPI document (openapi-spec-validator),
   or lacks a path the code serves or calls: the push routes in
   src/daemon/push.rs and the control-plane calls in src/control_plane/mod.rs,
   or the push signature headers of src/daemon/signature.rs;
2. a configuration key declared in src/config/raw.rs (every `pub NAME:` field
   of every `Raw*` struct, mapped to its section through `RawConfig`) has no
   row in the matching section of docs/configuration.md, or that row does not
   name the key's `GRANTBRIDGE__...` environment variable, or the reference
   documents a key the code does not have;
3. an error code of src/contract.rs (`ErrorCode::as_str`) has no section in
   docs/operations.md;
4. a metric registered in src/metrics.rs (full exposition name: the registry
   prefix, `_total` for counters) is missing from docs/operations.md, or its
   row there does not name each of its labels;
5. a relative link in docs/*.md points at a file (or a heading anchor in a
   Markdown file) that does not exist;
6. docs/README.md does not link every document in docs/;
7. the repository does not stand on its own: a relative link in any Markdown
   file of the repository resolves outside it (or to nothing), or any tracked
   text file refers to the `shared/` folder that only the developers have.
   Users clone this repository alone.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SRC = ROOT / "src"

problems: list[str] = []


def problem(message: str) -> None:
    problems.append(message)


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        problem(f"{path.relative_to(ROOT)}: cannot read: {e}")
        return ""


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------
# Markdown helpers


def strip_code_blocks(text: str) -> str:
    """Blank out fenced code blocks (keeping line numbers)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside code blocks."""
    found = []
    for line in strip_code_blocks(text).splitlines():
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            found.append((len(m.group(1)), m.group(2)))
    return found


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, h in headings(text):
        s = slug(h)
        n = seen.get(s, 0)
        seen[s] = n + 1
        result.add(s if n == 0 else f"{s}-{n}")
    return result


def sections(text: str, level: int) -> dict[str, str]:
    """Heading text -> the text under it, up to the next heading of `level` or higher."""
    result: dict[str, str] = {}
    current, body = None, []
    for line in strip_code_blocks(text).splitlines():
        m = re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
        if m and len(m.group(1)) <= level:
            if current is not None:
                result[current] = "\n".join(body)
            current = m.group(2) if len(m.group(1)) == level else None
            body = []
            continue
        body.append(line)
    if current is not None:
        result[current] = "\n".join(body)
    return result


def table_rows(text: str) -> dict[str, str]:
    """First cell (a `code` span) -> the whole row, for Markdown table rows."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\|\s*`([^`]+)`\s*\|", line)
        if m:
            rows[m.group(1)] = line
    return rows


# --------------------------------------------------------------------------
# 1. OpenAPI


def check_openapi() -> None:
    path = DOCS / "openapi.yaml"
    try:
        import yaml
        from openapi_spec_validator import validate
    except ImportError as e:
        problem(
            f"cannot import {e.name}: python3 -m pip install -r docs/requirements.txt"
        )
        return
    try:
        spec = yaml.safe_load(read(path))
    except yaml.YAMLError as e:
        problem(f"{rel(path)}: not YAML: {e}")
        return
    try:
        validate(spec)
    except Exception as e:  # the validator raises several exception types
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        problem(f"{rel(path)}: not a valid OpenAPI document: {first}")
        return
    paths = set((spec.get("paths") or {}).keys())

    # Push routes the connector serves.
    push = read(SRC / "daemon" / "push.rs")
    for route, method in re.findall(r'\.route\("([^"]+)",\s*(get|post|put|delete)\(', push):
        if route not in paths:
            problem(f"{rel(path)}: push route {route} (src/daemon/push.rs) is not in `paths`")
        elif method not in spec["paths"][route]:
            problem(f"{rel(path)}: {method.upper()} {route} (src/daemon/push.rs) is not documented")

    # Control-plane calls the connector makes: self.url(&["actions", action_id, "extend"]).
    cp = read(SRC / "control_plane" / "mod.rs")
    calls = re.findall(r"self\.url\(&\[([^\]]*)\]\)", cp)
    if not calls:
        problem("src/control_plane/mod.rs: found no control-plane calls (self.url(&[...])) to check")
    for call in calls:
        parts = []
        for item in (p.strip() for p in call.split(",") if p.strip()):
            literal = re.fullmatch(r'"([^"]*)"', item)
            parts.append(literal.group(1) if literal else "{" + item + "}")
        route = "/v1/connectors/{connector_id}/" + "/".join(parts)
        if route not in paths:
            problem(f"{rel(path)}: control-plane call POST {route} (src/control_plane/mod.rs) is not in `paths`")

    # The push signature headers.
    sig = read(SRC / "daemon" / "signature.rs")
    text = read(path).lower()
    for header in re.findall(r'_HEADER: &str = "([^"]+)"', sig):
        if header.lower() not in text:
            problem(f"{rel(path)}: the push header {header} (src/daemon/signature.rs) is not described")


# --------------------------------------------------------------------------
# 2. Configuration keys


def parse_raw_structs(text: str) -> dict[str, list[tuple[str, str]]]:
    """Struct name -> [(field, type)] for every `struct Raw*` in raw.rs."""
    structs = {}
    for m in re.finditer(r"struct\s+(Raw\w+)\s*\{(.*?)\n\}", text, re.S):
        fields = re.findall(r"^\s*pub\s+(\w+)\s*:\s*([^\n]+?),?\s*$", m.group(2), re.M)
        structs[m.group(1)] = fields
    return structs


def config_keys() -> dict[str, list[str]]:
    """Section id -> keys. '' is the top level; 'connections.NAME' a map entry."""
    raw = read(SRC / "config" / "raw.rs")
    structs = parse_raw_structs(raw)
    if "RawConfig" not in structs:
        problem("src/config/raw.rs: no `struct RawConfig` found")
        return {}
    result: dict[str, list[str]] = {"": []}
    used = {"RawConfig"}
    for field, ty in structs["RawConfig"]:
        inner = re.search(r"\b(Raw\w+)\b", ty)
        if not inner:
            result[""].append(field)
            continue
        name = inner.group(1)
        used.add(name)
        if name not in structs:
            problem(f"src/config/raw.rs: RawConfig.{field} has type {name}, which was not found")
            continue
        section = f"{field}.NAME" if "BTreeMap" in ty or "HashMap" in ty else field
        result[section] = [f for f, _ in structs[name]]
    for name in structs:
        if name not in used:
            problem(f"src/config/raw.rs: struct {name} is not a section of RawConfig; teach docs/check_docs.py where it belongs")
    return result


def env_var(section: str, key: str) -> str:
    parts = ["GRANTBRIDGE"] + [p for p in section.split(".") if p] + [key]
    return "__".join("<NAME>" if p == "NAME" else p.upper() for p in parts)


def check_configuration() -> None:
    path = DOCS / "configuration.md"
    text = read(path)
    keys = config_keys()
    by_heading = sections(text, 2)
    for section, fields in keys.items():
        if section:
            title = f"`[{section}]`"
            matches = [h for h in by_heading if title in h]
        else:
            title = "Top-level keys"
            matches = [h for h in by_heading if h.strip().lower().startswith("top-level keys")]
        if not matches:
            problem(f"{rel(path)}: no `## ...{title}...` section for the keys {', '.join(fields)}")
            continue
        rows = table_rows(by_heading[matches[0]])
        for key in fields:
            row = rows.get(key)
            if row is None:
                problem(f"{rel(path)}: section {title} has no table row for `{key}` (src/config/raw.rs)")
                continue
            # Top-level keys that are whole sections are rows too, but have no variable of their own.
            wanted = env_var(section, key)
            if wanted not in row and not (section == "" and key in keys_of_sections(keys)):
                problem(f"{rel(path)}: the row for `{key}` in {title} does not name its variable {wanted}")
        documented = set(rows) - set(fields)
        if section == "":
            documented -= keys_of_sections(keys)
        for extra in sorted(documented):
            problem(f"{rel(path)}: section {title} documents `{extra}`, which src/config/raw.rs does not declare")


def keys_of_sections(keys: dict[str, list[str]]) -> set[str]:
    return {s.split(".")[0] for s in keys if s}


# --------------------------------------------------------------------------
# 3. Error codes


def check_error_codes() -> None:
    contract = read(SRC / "contract.rs")
    impl = re.search(r"impl ErrorCode \{(.*?)\n\}", contract, re.S)
    codes = re.findall(r'=>\s*"([a-z_]+)"', impl.group(1)) if impl else []
    if not codes:
        problem("src/contract.rs: found no error codes in `impl ErrorCode`")
        return
    path = DOCS / "operations.md"
    titles = [h for _, h in headings(read(path))]
    for code in codes:
        if not any(f"`{code}`" in h for h in titles):
            problem(f"{rel(path)}: error code `{code}` (src/contract.rs) has no heading of its own")


# --------------------------------------------------------------------------
# 4. Metrics


def registered_metrics() -> list[tuple[str, list[str]]]:
    """(exposition name, labels) of every metric src/metrics.rs registers."""
    text = read(SRC / "metrics.rs")
    prefix = re.search(r'Registry::with_prefix\("([^"]+)"\)', text)
    prefix = prefix.group(1) + "_" if prefix else ""
    labels = {
        m.group(1): re.findall(r"pub\s+(\w+)\s*:", m.group(2))
        for m in re.finditer(r"struct\s+(\w+)\s*\{(.*?)\}", text, re.S)
    }
    found = []
    for m in re.finditer(r'registry\.register\(\s*"(\w+)"\s*,\s*"[^"]*"\s*,\s*(\w+)\.clone\(\)', text):
        name, var = m.groups()
        decl = re.search(rf"let\s+{var}\s*=\s*([^;]+);", text)
        decl = decl.group(1) if decl else ""
        family = re.search(r"Family::<\s*(\w+)\s*,\s*(\w+)\s*>", decl)
        kind = family.group(2) if family else (re.match(r"\s*(\w+)::", decl) or [None, ""])[1]
        metric_labels = labels.get(family.group(1), []) if family else []
        full = prefix + name + ("_total" if kind == "Counter" else "")
        found.append((full, metric_labels))
    if not found:
        problem("src/metrics.rs: found no registry.register(...) calls")
    return found


def check_metrics() -> None:
    path = DOCS / "operations.md"
    text = read(path)
    rows = table_rows(strip_code_blocks(text))
    for name, labels in registered_metrics():
        if name not in text:
            problem(f"{rel(path)}: metric {name} (src/metrics.rs) is not documented")
            continue
        row = rows.get(name)
        if row is None:
            problem(f"{rel(path)}: metric {name} has no row of its own in a metrics table")
            continue
        for label in labels:
            if f"`{label}`" not in row:
                problem(f"{rel(path)}: the row for {name} does not name its label `{label}`")


# --------------------------------------------------------------------------
# 5. Links, 6. the index


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def check_links() -> None:
    for doc in sorted(DOCS.glob("*.md")):
        text = strip_code_blocks(read(doc))
        text = re.sub(r"`[^`\n]*`", "", text)  # links inside code spans are not links
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # https:, mailto:, ...
            file_part, _, fragment = target.partition("#")
            dest = doc if not file_part else (doc.parent / file_part).resolve()
            if not dest.exists():
                problem(f"{rel(doc)}: link {target} points at {rel(dest)}, which does not exist")
                continue
            if fragment and dest.suffix == ".md" and dest.is_file():
                if fragment not in anchors(read(dest)):
                    problem(f"{rel(doc)}: link {target}: {rel(dest)} has no heading #{fragment}")


def repository_files() -> list[Path]:
    """The files git tracks (or, outside a checkout, every file but build output)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        return [ROOT / f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        skip = {"target", "node_modules", ".git"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


OUTSIDE = re.compile(r"(?:\.\./)+shared/|\bshared/PROTOCOL\.md")


def check_self_contained() -> None:
    for path in repository_files():
        if path.resolve() == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # binary
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                problem(f"{rel(path)}:{n}: refers to shared/, which is not part of the repository")
        if path.suffix != ".md":
            continue
        body = re.sub(r"`[^`\n]*`", "", strip_code_blocks(text))
        for target in LINK.findall(body):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                continue
            dest = (path.parent / target.partition("#")[0]).resolve()
            if not dest.is_relative_to(ROOT):
                problem(f"{rel(path)}: link {target} points outside the repository")
            elif not dest.exists():
                problem(f"{rel(path)}: link {target} points at {rel(dest)}, which does not exist")


def check_index() -> None:
    index = DOCS / "README.md"
    text = strip_code_blocks(read(index))
    linked = {t.partition("#")[0] for t in LINK.findall(text)}
    for doc in sorted(DOCS.iterdir()):
        if doc.name == "README.md" or doc.suffix not in {".md", ".yaml"}:
            continue
        if doc.name not in linked:
            problem(f"{rel(index)}: the index does not link {doc.name}")


def check_alerts() -> None:
    """operations.md's alert table lists exactly the alerts of the shipped
    rules file."""
    import yaml

    rules = ROOT / "deploy" / "helm" / "grantbridge" / "files" / "prometheus-rules.yaml"
    shipped = {r["alert"] for g in yaml.safe_load(read(rules))["groups"] for r in g["rules"]}
    text = read(DOCS / "operations.md")
    section = text[text.index("## Alerts"):text.index("## Logs")]
    listed = set(re.findall(r"^\| `(Grantbridge\w+)` \|", section, re.M))
    for name in sorted(shipped - listed):
        problem(f"docs/operations.md: alert {name} ({rel(rules)}) is not in the alerts table")
    for name in sorted(listed - shipped):
        problem(f"docs/operations.md: alert {name} is listed but {rel(rules)} has no such alert")


def main() -> int:
    check_openapi()
    check_alerts()
    check_configuration()
    check_error_codes()
    check_metrics()
    check_links()
    check_index()
    check_self_contained()
    if problems:
        print(f"docs/check_docs.py: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(
        "docs/check_docs.py: ok (openapi.yaml valid and complete; configuration keys, "
        "error codes and metrics documented; links resolve; index complete; "
        "nothing refers outside the repository)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
