"""Reading one YAML file into plain values that remember where they came from.

A unit file becomes a `Document`: ordinary dicts, lists and scalars, plus, for every path
into them, the line it was written on and, for scalars, the text as written. Validation
reports errors at those lines; converters that want the text as written (octal modes such as
`umask: 0022`, which YAML 1.1 reads as the number 18) get it from `raw`.

Everything that can go wrong with a file (not a regular file, too large, not UTF-8, not YAML,
not a mapping, several documents, recursive or exploding aliases, too deep, duplicate keys,
tags we do not construct) is reported as a `SourceError` with a line number where there is
one, never as a traceback. YAML merge keys (`<<: *defaults`) are resolved here, so that every
value keeps the line it was written on.
"""

from __future__ import annotations

import os

import yaml

from activator import observed, yamlhints
from activator.model import Location

try:  # libyaml's parser is several times faster; the constructors are the same.
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000  # bounds alias expansion ("billion laughs")
MAX_DEPTH = 50  # unit files are a few levels deep; this keeps recursion far from Python's limit

Path = tuple  # a path into a document: keys and list indexes


class SourceError(Exception):
    def __init__(self, location: Location, message: str):
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


class Document:
    """A parsed file: `value` plus the location and source text of every path into it."""

    def __init__(self, value: object, file: str):
        self.value = value
        self.file = file
        self.lines: dict = {}  # path -> line of the key or item
        self.raw: dict = {}  # path -> scalar text as written

    def where(self, path: Path) -> Location:
        """The location of `path`, or of its nearest ancestor that has one."""
        while path and path not in self.lines:
            path = path[:-1]
        file, line = self.lines.get(path, (self.file, 0))
        return Location(file, line)


def read_text(path: str, limit: int = MAX_FILE_BYTES) -> str:
    """The file's text, or a SourceError saying why it cannot be had.

    Only regular files are read: a fifo would block `activator check` forever, a device could
    be endless (observed.contents, which also records what it read, for the model cache).
    """
    data = observed.contents(path, limit)
    if isinstance(data, int):
        raise SourceError(Location(path), f"cannot read: {os.strerror(data)}")
    if isinstance(data, str):
        if data == "nul":
            raise SourceError(Location(repr(path)), "cannot read: the path contains a NUL character")
        raise SourceError(Location(path), "cannot read: it is a directory, not a file"
                          if data == "directory" else "cannot read: not a regular file")
    if len(data) > limit:
        raise SourceError(Location(path), f"file is larger than the limit of {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SourceError(Location(path, line), "not UTF-8 text") from None


def load(path: str, empty_ok: bool = False) -> Document:
    """Parse the YAML file at `path` into a Document whose value is a mapping.

    With `empty_ok` (drop-ins), a file with nothing but comments is an empty mapping.
    """
    text = read_text(path)
    if not text.strip() and not empty_ok:
        raise SourceError(Location(path), "file is empty")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        line, problem = yamlhints.explain(e, text)
        if "expected a single document" in str(e.context or ""):
            problem = "several YAML documents in one file; a unit file holds one"
        raise SourceError(Location(path, line + 1), f"YAML: {problem}") from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow, such as NUL
        line = text.count("\n", 0, e.position) + 1
        raise SourceError(Location(path, line), f"YAML: {str(e).splitlines()[0]}") from None
    except yaml.YAMLError as e:
        raise SourceError(Location(path), f"YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:  # the pure-Python composer, without libyaml's depth limit
        raise SourceError(Location(path), "YAML: values nested too deeply") from None
    finally:
        loader.dispose()
    if node is None or _is_empty(node):
        if empty_ok:
            doc = Document({}, path)
            doc.lines[()] = (path, 1)
            return doc
        raise SourceError(Location(path), "the file holds no keys (an empty YAML document)")
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        raise SourceError(Location(path, node.start_mark.line + 1),
                          f"expected a mapping of keys to values, found {kind}")
    doc = Document(None, path)
    doc.value = _Converter(loader, doc).convert(node, ())
    doc.lines[()] = (path, node.start_mark.line + 1)
    return doc


_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_COLLECTION_TAGS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")


def _is_empty(node) -> bool:
    """A document of nothing but `---` (or `---` and comments)."""
    return isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style


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
            raise self.error(node, "recursive alias: a value contains itself")
        if len(self.active) >= MAX_DEPTH:
            raise self.error(node, f"values nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, yaml.ScalarNode):
            self.doc.raw[path] = node.value
            if node.tag == _STR_TAG:
                return node.value  # most scalars: the constructor would only copy the text
            try:
                return self.loader.construct_object(node)
            except yaml.YAMLError as e:
                raise self.error(node, f"YAML: {getattr(e, 'problem', None) or e}") from None
            except (ValueError, TypeError, KeyError, OverflowError):  # `!!int abc`, `!!bool maybe`
                raise self.error(node, f"YAML: '{node.value}' cannot be read as {node.tag}") from None
        if node.tag not in _COLLECTION_TAGS:  # tags on lists and mappings would be ignored
            raise self.error(node, f"YAML: unsupported tag '{node.tag}'")
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
        """Keys in file order; `<<: *base` (YAML merge keys) adds the keys not given here."""
        result: dict = {}
        explicit: dict[str, int] = {}  # key -> line, for the keys written in this mapping
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self.merge_into(result, explicit, value_node, path)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, "a key must be a plain word, not a list or mapping")
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in explicit:
                raise self.error(key_node, f"duplicate key '{key}' (first given on line "
                                 f"{explicit[key]}): keep one of them")
            explicit[key] = line
            self.doc.lines[path + (key,)] = (self.doc.file, line)
            result[key] = self.convert(value_node, path + (key,))
        return result

    def merge_into(self, result: dict, explicit: dict, value_node, path: Path) -> None:
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:  # the first mapping given wins
            if not isinstance(source, yaml.MappingNode):
                raise self.error(source, "YAML: '<<' merges a mapping or a list of mappings")
            # Converted into tables of their own: only the keys taken may leave their lines
            # and raw text, or `umask: 0022` could be read with a merged mapping's text.
            lines, raw = self.doc.lines, self.doc.raw
            self.doc.lines, self.doc.raw = {}, {}
            try:
                merged = self.convert(source, path)
                taken = [k for k in merged if k not in explicit and k not in result]
                for table, saved in ((self.doc.lines, lines), (self.doc.raw, raw)):
                    for p, v in table.items():
                        if len(p) > len(path) and p[len(path)] in taken:
                            saved[p] = v
            finally:
                self.doc.lines, self.doc.raw = lines, raw
            for key in taken:
                result[key] = merged[key]

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
