"""Reading the configuration's YAML safely: strict UTF-8, no duplicate keys, bounded aliases.

PyYAML's SafeLoader lets the last of two equal keys win silently, expands nested aliases into
structures exponentially larger than the file ("billion laughs": 635 bytes became 10 GB of
validation work), and raises plain Python errors (a 13th month, a 5,000-digit integer) that
are not YAML errors. Here every such problem is a YAMLProblem with the line and column at
fault, and nothing is built before the document is known to be small once expanded.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

# a real configuration is a few thousand nodes; this is far above that and still cheap to
# validate and to place errors in (the line map visits every expanded node once)
MAX_NODES = 100_000
# a configuration nests about eight levels; deeper is a mistake or an attack
MAX_DEPTH = 64
MAX_FILE_BYTES = 1024 * 1024  # a large configuration is a few tens of KB
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLProblem(Exception):
    """A problem with the file itself; `line` and `column` are 1-based, or None."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column

    def located(self, source: str) -> str:
        where = source
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        return f"{where}: {self.message}"


def read(path: Path) -> str:
    """A configuration file's text, read with its size bounded and decoded strictly (see
    decode); OSError when it cannot be read, a YAMLProblem when it is too large or not UTF-8."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise YAMLProblem(f"larger than {MAX_FILE_BYTES // 1024 // 1024} MiB")
    return decode(data)


def decode(data: bytes) -> str:
    """The file's text; a located YAMLProblem unless it is UTF-8 without NUL or control bytes."""
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if data.startswith(bom):
            raise YAMLProblem(f"the file is {name}-encoded: save it as UTF-8", 1, 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise YAMLProblem(
            f"not valid UTF-8 (byte 0x{data[e.start]:02x}): save the file as UTF-8", line, column
        ) from None
    text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark is harmless
    bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if bad:
        pos = bad.start()
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        code = ord(bad.group(0))
        what = "a NUL byte" if code == 0 else f"the control character U+{code:04X}"
        raise YAMLProblem(f"the file contains {what}, which YAML does not allow", line, column)
    return text


class _Loader(yaml.SafeLoader):
    _composed = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        # a flat list of a million scalars needs no alias to cost a gigabyte: stop composing
        # (the expansion is checked after, in _check_expansion) past MAX_NODES as written
        self._composed += 1
        if self._composed > MAX_NODES:
            mark = self.peek_event().start_mark
            raise YAMLProblem(
                f"the document holds more than {MAX_NODES} values: a configuration never "
                "needs that many",
                mark.line + 1,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # checked before SafeLoader flattens `<<` merges, whose keys may be overridden
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:
                continue  # unhashable: SafeLoader reports it
            if earlier is not key_node:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {earlier.start_mark.line + 1}): "
                    "the later one would silently replace the earlier",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError):
            # e.g. date 2024-13-45 or an integer of thousands of digits; the value is not
            # echoed (it may sit under a secret key)
            kind = node.tag.rsplit(":", 1)[-1]
            raise ConstructorError(
                None, None, f"cannot read this value as {kind}", node.start_mark
            ) from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse documents that expand (aliases followed) beyond MAX_NODES or MAX_DEPTH, or
    that refer to themselves. Linear in the composed graph: each node is sized once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        mark = node.start_mark
        if id(node) in open_nodes:
            raise YAMLProblem("an alias refers to a node that contains it", mark.line + 1)
        if depth > MAX_DEPTH:
            raise YAMLProblem(f"nested more than {MAX_DEPTH} levels deep", mark.line + 1)
        open_nodes.add(id(node))
        total = 1
        for child in _children(node):
            total += size(child, depth + 1)
            if total > MAX_NODES:
                raise YAMLProblem(
                    f"the document expands to more than {MAX_NODES} values (each alias *name "
                    "counted as often as it is used): use fewer aliases or a smaller file",
                    mark.line + 1,
                )
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, 0)


def line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict:
    """Map each path in the document to the line it starts on (1-based). Only called on
    documents that passed _check_expansion, so it visits at most MAX_NODES nodes."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            k = key.value
            out[(*path, k)] = key.start_mark.line + 1
            line_map(value, (*path, k), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            line_map(item, (*path, i), out)
    return out


def _yaml_problem(e: yaml.YAMLError) -> YAMLProblem:
    # str(e) quotes the offending line of the file, which may hold a password: use only the
    # problem and its position
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        text = e.problem or "invalid YAML"
        if e.context:  # e.g. "while scanning a quoted scalar at line 3, found ..."
            at = f" at line {e.context_mark.line + 1}" if e.context_mark is not None else ""
            text = f"{e.context}{at}, {text}"
        return YAMLProblem(f"invalid YAML: {text}", mark.line + 1, mark.column + 1)
    return YAMLProblem("invalid YAML")


def load(text: str) -> tuple[Any, yaml.Node | None]:
    """The document's data and its composed node (for line numbers); YAMLProblem on a bad
    document. An empty document is (None, None)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node)
        return loader.construct_document(node), node
    except yaml.YAMLError as e:
        raise _yaml_problem(e) from None
    except RecursionError:
        raise YAMLProblem(f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()
