"""Read a spec's YAML defensively: bounded size, nesting and alias expansion, no duplicate keys (merge keys
`<<: *base` merge a mapping in, as in most YAML tools), and YAML 1.2 scalars (`16:00` stays a string, `010` is ten, `yes` is a string, not YAML 1.1's 960, 8, True)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mvcompile.spec.errors import SpecError

MAX_BYTES = 1 << 20  # a spec file larger than 1 MiB is refused before it is parsed
MAX_DEPTH = 32  # nesting of mappings and lists (a spec needs 8)
MAX_NODES = 50_000  # values in the document with every alias expanded (the largest shipped spec has ~1,500)

_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_MERGE = "tag:yaml.org,2002:merge"


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars and limits on nesting and expanded size."""

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._composed = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values under it, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        is_alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        if is_alias:
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:
                raise yaml.composer.ComposerError(None, None, "an alias refers to a value that contains it", mark)
            return node
        self._depth += 1
        self._composed += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        if self._composed > MAX_NODES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_NODES:,} values", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = size = 1 + sum(self._sizes[id(child)] for child in _children(node))
        if size > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES:,} values once its aliases (*name) are expanded", mark)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # `<<: *base` merges a mapping in; its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node)
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)  # YAML 1.2: a leading 0 is not octal


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


for _tag, _pattern, _first in (
    (_MERGE, re.compile(r"^<<$"), "<"),
    ("tag:yaml.org,2002:bool", _BOOL, "tTfF"),
    ("tag:yaml.org,2002:int", _INT, "-+0123456789"),
    ("tag:yaml.org,2002:float", _FLOAT, "-+.0123456789"),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
):
    _SpecLoader.add_implicit_resolver(_tag, _pattern, list(_first))
_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`; SpecError (naming the file and line) if it is too large, too deep,
    expands too far, repeats a key, or is not YAML."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SpecError(f"{path}: spec file is {size:,} bytes; specs are limited to {MAX_BYTES:,} bytes")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # a file that grew since (or a device) is still cut at the limit
        text = data.decode()
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read spec file: {err}") from None
    if len(data) > MAX_BYTES:
        raise SpecError(f"{path}: spec file is larger than {MAX_BYTES:,} bytes")
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        syntax = isinstance(err, (yaml.scanner.ScannerError, yaml.parser.ParserError))
        raise SpecError(f"{path}: YAML syntax error at {where}: {err.problem}" if syntax
                        else f"{path}: {where}: {err.problem}") from None
    except yaml.reader.ReaderError as err:  # a control or other non-printable character
        line = text.count("\n", 0, err.position) + 1
        code = err.character if isinstance(err.character, int) else ord(err.character)
        raise SpecError(f"{path}: line {line}: character U+{code:04X} is not allowed in YAML (a control character; "
                        "write it as an escape in a double-quoted string)") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: YAML error: {' '.join(str(err).split())}") from None
