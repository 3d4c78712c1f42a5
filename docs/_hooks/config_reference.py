"""The configuration reference, read from `conf/` itself: every group, every option, and every key with its
default and its comment (the comment on its line, or the comment lines just above it), so the page cannot go
stale. `missing_comments()` lists the keys without one (a test fails on them)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"
STRUCTURAL = {"defaults", "_target_", "_partial_", "_self_", "_recursive_", "_convert_", "_args_"}
LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*|'[^']*'|\"[^\"]*\"):(?P<rest>.*)$")


@dataclass
class Key:
    """One key of a config file: its dotted path, its default as written, and its comment."""

    path: str
    default: str
    comment: str
    line: int
    container: bool = False  # a mapping or list whose own keys (or items) follow


@dataclass
class ConfigFile:
    """One file of the tree: its group ("" for a top-level config), its option name, header, the package its keys
    land in (Hydra's rule: the `# @package` line, else the group's path) and its keys."""

    group: str
    option: str
    header: str
    package: str = ""
    keys: list[Key] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)  # the `_target_` of each mapping, by its path


def _split_comment(text: str) -> tuple[str, str]:
    """(value, comment) of the rest of a `key: value  # comment` line (a # inside quotes is part of the value)."""
    quote = None
    for i, char in enumerate(text):
        if char in "'\"":
            quote = None if quote == char else (quote or char)
        elif char == "#" and quote is None and (i == 0 or text[i - 1] in " \t"):
            return text[:i].strip(), text[i + 1 :].strip()
    return text.strip(), ""


def read_config(path: Path) -> ConfigFile:
    """The keys of one YAML config, with their comments: nested keys dotted, list items part of their key's value;
    a key without a comment inside a mapping with a `_target_` is that callable's argument."""
    group = path.parent.relative_to(CONF).as_posix() if path.parent != CONF else ""
    lines = path.read_text().splitlines()
    header: list[str] = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    directive = next((h.split()[1] for h in header if h.startswith("@package") and len(h.split()) > 1), None)
    package = group.replace("/", ".") if directive is None else "" if directive == "_global_" else directive
    header = [h for h in header if not h.startswith("@package")]
    result = ConfigFile(group, path.stem, " ".join(header), package)
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    targets = result.targets  # mapping path -> its _target_
    above: list[str] = []  # comment lines just above the next key
    last: Key | None = None
    in_list = -1  # the indent of a list being skipped
    for number, line in enumerate(lines, 1):
        if line.startswith("#") and number <= len(header) + (directive is not None):
            continue
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            above = []
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if last is not None and not above and _continues(lines, number):
                last.comment = f"{last.comment} {comment}".strip()  # carried on under the key's line
            else:
                above.append(comment)
            continue
        if in_list >= 0 and (indent > in_list or (indent == in_list and stripped.startswith("- "))):
            continue
        in_list = -1
        if stripped.startswith("- "):
            in_list, last, above = indent, None, []
            continue
        match = LINE.match(line)
        if not match:
            last = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match["key"].strip("'\"")
        value, comment = _split_comment(match["rest"])
        parent = ".".join(k for _, k in stack)
        path_key = f"{parent}.{key}" if parent else key
        if not value:  # a mapping (or a list) follows
            stack.append((indent, key))
        if key == "_target_":
            targets[parent] = value
        if key in STRUCTURAL or any(part in STRUCTURAL for part in path_key.split(".")):
            above, last = [], None
            continue
        last = Key(path_key, value, comment or " ".join(above), number, container=not value)
        result.keys.append(last)
        above = []
    for key in result.keys:
        parent = key.path.rpartition(".")[0]
        if not key.comment and parent in targets:
            key.comment = f"argument of `{targets[parent]}`"
    return result


def _continues(lines: list[str], number: int) -> bool:
    """Whether comment line `number` (1-based) carries on the comment of the `key: value  # ...` line above it
    (aligned with, or past, that comment's start)."""
    previous = lines[number - 2] if number >= 2 else ""
    if "#" not in previous or previous.lstrip().startswith("#"):
        return False
    return lines[number - 1].index("#") >= previous.index("#")


def read_tree() -> list[ConfigFile]:
    """Every config file, top-level ones first, then groups in alphabetical order. A key left without a comment
    where the same key is explained in another file takes that explanation (one meaning per key)."""
    files = sorted(CONF.rglob("*.yaml"), key=lambda p: (p.parent != CONF, p.parent.as_posix(), p.stem))
    tree = [read_config(p) for p in files]
    meaning: dict[str, str] = {}
    for config in tree:  # where a package's mapping is built by a callable, its other options are its arguments
        for path, target in config.targets.items():
            full = f"{config.package}.{path}".strip(".") if path else config.package
            meaning.setdefault(f"{full}.*", f"argument of `{target}`")
    for own_words in (True, False):  # a key's own comment first, then "argument of ..." where it has none
        for config in tree:
            for key in config.keys:
                if key.comment and key.comment.startswith("argument of") != own_words:
                    meaning.setdefault(_full(config, key), key.comment)
    for config in tree:
        for key in config.keys:
            full = _full(config, key)
            if not key.comment and full in meaning:
                key.comment = meaning[full]
            elif not key.comment and f"{full.rpartition('.')[0]}.*" in meaning:
                key.comment = meaning[f"{full.rpartition('.')[0]}.*"]
            elif not key.comment and (config.group == "hydra" or full.startswith("hydra.")):
                key.comment = "Hydra's own setting (Hydra's documentation: Configuring Hydra)"
    return tree


def _full(config: ConfigFile, key: Key) -> str:
    """The key as the composed config names it (`data.root` for `root` in a data option)."""
    return f"{config.package}.{key.path}" if config.package else key.path


def missing_comments() -> list[str]:
    """`file:line key` for every key without a comment."""
    found = []
    for config in read_tree():
        for key in config.keys:
            if not key.comment and not key.container:
                where = Path(config.group or ".") / f"{config.option}.yaml"
                found.append(f"conf/{where.as_posix()}:{key.line} {key.path}")
    return found


def markdown() -> str:
    """The reference page."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `conf/` when the site is built: every config group, every option and every key with its "
        "default and its comment. Choose an option with `group=option`, set a key with `key=value` "
        "(`visionkit-train --cfg job` prints the composed config).",
        "",
    ]
    tree = read_tree()
    top = [c for c in tree if not c.group]
    out += ["## Commands' configs", ""]
    for config in top:
        out += _section(config, f"`{config.option}.yaml`")
    groups: dict[str, list[ConfigFile]] = {}
    for config in tree:
        if config.group:
            groups.setdefault(config.group, []).append(config)
    out += ["## Config groups", ""]
    for group, configs in groups.items():
        options = ", ".join(f"`{c.option}`" for c in configs)
        out += [f"### `{group}`", "", f"Options: {options}.", ""]
        for config in configs:
            out += _section(config, f"`{group}={config.option}`", level="####")
    return "\n".join(out) + "\n"


def _cell(text: str, code: bool = False) -> str:
    """Text safe in a table cell: pipes escaped, and outside code spans brackets too (`[a,b]` is a value there,
    not a link)."""
    text = text.replace("|", "\\|").replace("\n", " ")
    if code:
        return text
    return text.replace("[", "\\[").replace("]", "\\]").replace("<", "&lt;").replace(">", "&gt;")


def _section(config: ConfigFile, title: str, level: str = "###") -> list[str]:
    lines = [f"{level} {title}", ""]
    if config.header:
        lines += [_cell(config.header), ""]
    keys = [key for key in config.keys if not key.container or key.comment]
    if keys:
        lines += ["| key | default | what it sets |", "|---|---|---|"]
        for key in keys:
            default = f"`{_cell(key.default, code=True)}`" if key.default else ""
            lines.append(f"| `{_full(config, key)}` | {default} | {_cell(key.comment)} |")
        lines.append("")
    return lines
