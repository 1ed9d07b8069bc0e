"""Reading one YAML file into plain values that remember where they came from.

A unit file becomes a `Document`: ordinary dicts, lists and scalars, plus, for every path
into them, the line it was written on and, for scalars, the text as written. Validation
reports errors at those lines; converters that want the text as written (octal modes such as
`umask: 0022`, which YAML 1.1 reads as the number 18) get it from `raw`.

Everything that can go wrong with the bytes of a file (too large, not UTF-8, not YAML, not a
mapping, several documents, recursive or exploding aliases, duplicate keys) is reported as a
`SourceError` with a line number, never as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

try:  # libyaml's parser is several times faster; the constructors are the same.
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000  # bounds alias expansion ("billion laughs")

Path = tuple  # a path into a document: keys and list indexes


@dataclass(frozen=True)
class Location:
    file: str
    line: int = 0  # 1-based; 0 when the problem concerns the whole file

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class SourceError(Exception):
    def __init__(self, location: Location, message: str):
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


@dataclass
class Document:
    """A parsed file: `value` plus the location and source text of every path into it."""

    value: object
    file: str
    lines: dict = field(default_factory=dict)  # path -> line of the key or item
    raw: dict = field(default_factory=dict)  # path -> scalar text as written

    def where(self, path: Path) -> Location:
        """The location of `path`, or of its nearest ancestor that has one."""
        while path and path not in self.lines:
            path = path[:-1]
        file, line = self.lines.get(path, (self.file, 0))
        return Location(file, line)


def read_text(path: str, limit: int = MAX_FILE_BYTES) -> str:
    """The file's text, or a SourceError saying why it cannot be had."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise SourceError(Location(path), f"cannot read: {e.strerror}") from None
    if len(data) > limit:
        raise SourceError(Location(path), f"file is larger than the limit of {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SourceError(Location(path, line), "not UTF-8 text") from None


def load(path: str) -> Document:
    """Parse the YAML file at `path` into a Document whose value is a mapping."""
    text = read_text(path)
    if not text.strip():
        raise SourceError(Location(path), "file is empty")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        problem = e.problem or e.context or "invalid YAML"
        if "expected a single document" in str(e.context or ""):
            problem = "several YAML documents in one file; a unit file holds one"
        raise SourceError(Location(path, line), f"YAML: {problem}") from None
    except yaml.YAMLError as e:  # reader errors: control characters and the like
        raise SourceError(Location(path), f"YAML: {e}") from None
    finally:
        loader.dispose()
    if node is None:
        raise SourceError(Location(path), "file holds no YAML document")
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        raise SourceError(Location(path, node.start_mark.line + 1),
                          f"expected a mapping of keys to values, found {kind}")
    doc = Document(None, path)
    doc.value = _Converter(loader, doc).convert(node, ())
    return doc


class _Converter:
    """Turns a composed node tree into plain values, filling the document's line tables."""

    def __init__(self, loader, doc: Document):
        self.loader = loader
        self.doc = doc
        self.nodes = 0
        self.active: set[int] = set()  # nodes on the current path: an alias back to one loops

    def convert(self, node, path: Path):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(node, f"document has more than {MAX_NODES} values (aliases expanded)")
        if id(node) in self.active:
            raise self.error(node, "recursive alias")
        if isinstance(node, yaml.ScalarNode):
            self.doc.raw[path] = node.value
            try:
                return self.loader.construct_object(node)
            except yaml.YAMLError as e:
                raise self.error(node, f"YAML: {getattr(e, 'problem', None) or e}") from None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for i, item in enumerate(node.value):
                    self.doc.lines[path + (i,)] = (self.doc.file, item.start_mark.line + 1)
                    items.append(self.convert(item, path + (i,)))
                return items
            return self.convert_mapping(node, path)
        finally:
            self.active.discard(id(node))

    def convert_mapping(self, node, path: Path) -> dict:
        try:
            self.loader.flatten_mapping(node)  # YAML merge keys (<<)
        except yaml.YAMLError as e:
            raise self.error(node, f"YAML: {getattr(e, 'problem', None) or e}") from None
        result: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, "a key must be a plain word, not a list or mapping")
            key = key_node.value
            if key in result:
                raise self.error(key_node, f"duplicate key '{key}'")
            self.doc.lines[path + (key,)] = (self.doc.file, key_node.start_mark.line + 1)
            result[key] = self.convert(value_node, path + (key,))
        return result

    def error(self, node, message: str) -> SourceError:
        return SourceError(Location(self.doc.file, node.start_mark.line + 1), message)


def merge(base: Document, over: Document) -> None:
    """Deep-merge `over` into `base` in place: mappings merge key by key, anything else replaces."""

    def walk(base_value: dict, over_value: dict, path: Path) -> None:
        for key, value in over_value.items():
            here = path + (key,)
            if isinstance(value, dict) and isinstance(base_value.get(key), dict):
                base.lines[here] = over.lines.get(here, base.lines.get(here))
                walk(base_value[key], value, here)
                continue
            base_value[key] = value
            for table in (base.lines, base.raw):
                for stale in [p for p in table if p[:len(here)] == here]:
                    del table[stale]
            for p, line in over.lines.items():
                if p[:len(here)] == here:
                    base.lines[p] = line
            for p, text in over.raw.items():
                if p[:len(here)] == here:
                    base.raw[p] = text

    walk(base.value, over.value, ())
