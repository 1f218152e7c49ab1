"""Reading YAML tuner did not write itself (tuned files, sizes files, configs), bounded.

Every YAML file a command reads comes through :func:`load`, which turns anything a hostile or
damaged file can do into one :class:`ConfigError` line naming the file:

- only a regular file is read: it is opened with ``O_NONBLOCK`` and checked with ``fstat``
  first, so a FIFO or a device given as the file is refused at once instead of blocking;
- at most :data:`MAX_BYTES` are read, and the nesting is at most :data:`MAX_DEPTH` deep (3,000
  nested ``[`` would otherwise overflow PyYAML's recursive composer);
- anchors and aliases: refused where tuner writes none (tuned and sizes files: ``aliases=False``);
  in a hand-written config, where ``&defaults`` / ``*defaults`` are legitimate, what the aliases
  expand to is capped at :data:`MAX_NODES` nodes in all ("billion laughs"), and an alias that
  refers to the node it is in (a self-referencing structure) is refused;
- a key given twice in one mapping is an error (PyYAML keeps the last silently);
- integers longer than :data:`MAX_INT_DIGITS` characters are refused (a 5,000-digit integer
  raises in ``int()``; a huge hexadecimal one does not, but cannot be printed), and every
  exception PyYAML's constructors let through (an impossible date, ...) becomes the same line.

:func:`shown` is how a value read from such a file appears in a message: ``reprlib``-bounded and
through :func:`tuner.base.render.plain`, so an error stays one short line whatever the value is.
:class:`Dumper` writes plain YAML without anchors: what tuner writes, it can read back.
"""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import Any

import yaml

from tuner.base.render import plain
from tuner.errors import ConfigError

MAX_BYTES = 2 << 20         # a tuned file is ~10 KB, a sizes file ~50 KB
MAX_DEPTH = 64              # tuner's own files nest 6 deep
MAX_NODES = 100_000         # nodes a config's aliases may expand to, in all
MAX_INT_DIGITS = 64

_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 6
_REPR.maxlevel = 3


def shown(value: Any) -> str:
    """``value`` for a one-line message: a bounded ``repr`` (long strings, lists and numbers
    elided with ``...``), control characters escaped."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a repr that raises (an int too long for str()) or recurses
        text = f"<{type(value).__name__}>"
    return plain(text)


class Dumper(yaml.SafeDumper):
    """Plain YAML: never an ``&anchor`` / ``*alias``, even when one object appears twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(data: Any, **kwargs: Any) -> str:
    """``yaml.dump`` through :class:`Dumper` (keyword arguments as ``yaml.dump``'s)."""
    return yaml.dump(data, Dumper=Dumper, **kwargs)


class _Refused(yaml.MarkedYAMLError):
    """What the bounded loader refuses, where."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the bounds of the module docstring. ``aliases``: whether anchors
    and aliases are accepted (capped) or refused."""

    def __init__(self, stream: str, aliases: bool) -> None:
        super().__init__(stream)
        self._aliases = aliases
        self._depth = 0
        self._weight: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if not self._aliases and (isinstance(event, yaml.AliasEvent)
                                  or getattr(event, "anchor", None) is not None):
            raise _Refused("anchors and aliases (&name, *name) are not allowed in this file",
                           event.start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.CollectionNode) and not isinstance(event, yaml.AliasEvent):
            children = (node.value if isinstance(node, yaml.SequenceNode)
                        else [n for pair in node.value for n in pair])
            total = 1
            for child in children:
                if isinstance(child, yaml.ScalarNode):
                    total += 1
                elif id(child) in self._weight:
                    total += self._weight[id(child)]
                else:   # an alias of a node still being composed: the node contains itself
                    raise _Refused("an alias refers to the structure it is in",
                                   node.start_mark)
            if total > MAX_NODES:
                raise _Refused(f"its aliases expand to more than {MAX_NODES} values",
                               node.start_mark)
            self._weight[id(node)] = total
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *defaults" overrides on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not key_node.start_mark:
                raise _Refused(f"duplicate key {shown(key)} (first at line {first.line + 1}); "
                               f"each key may appear once", key_node.start_mark)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_DIGITS:
            raise _Refused(f"an integer of {len(node.value)} characters; at most "
                           f"{MAX_INT_DIGITS}", node.start_mark)
        return super().construct_yaml_int(node)


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


class PlainLoader(BoundedLoader):
    """:class:`BoundedLoader` for the files tuner writes (tuned, sizes): JSON's data only, as
    tuner writes it. A timestamp stays the text it is (a hand-edited ``created:``), and the tags
    that build other types (``!!binary``, ``!!set``, ``!!omap``, ``!!pairs``) are refused:
    ``show --format json`` and ``compare`` could not print what they make."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> str:   # type: ignore[override]
        return str(node.value)

    def refuse_tag(self, node: yaml.Node) -> Any:
        raise _Refused(f"the tag {node.tag.rsplit(':', 1)[-1]!r} is not allowed in this file",
                       node.start_mark)


PlainLoader.add_constructor("tag:yaml.org,2002:timestamp", PlainLoader.construct_yaml_timestamp)
for _tag in ("binary", "set", "omap", "pairs"):
    PlainLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", PlainLoader.refuse_tag)


def read_text(path: str | Path, kind: str, limit: int = MAX_BYTES) -> str:
    """The text of the regular file at ``path``, at most ``limit`` bytes, without ever blocking
    on a FIFO or a device; a :class:`ConfigError` naming it otherwise."""
    where = plain(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"{where}: {kind} file not found") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{where}: cannot read the {kind} file: {plain(reason)}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{where}: is a directory; expected a {kind} YAML file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where}: not a regular file (a FIFO, a device or a socket); "
                              f"expected a {kind} YAML file")
        if info.st_size > limit:
            raise ConfigError(f"{where}: {info.st_size} bytes; a {kind} file is at most "
                              f"{limit} bytes")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew while being read
                raise ConfigError(f"{where}: more than {limit} bytes; a {kind} file is at most "
                                  f"{limit} bytes")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the {kind} file: "
                          f"{plain(exc.strerror or exc)}") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not a readable {kind} file: not UTF-8 text (byte "
                          f"{exc.start})"
                          ) from None


def parse(text: str, where: str, kind: str, *, aliases: bool) -> Any:
    """``text`` parsed through :class:`BoundedLoader` (``aliases``: a hand-written config), else
    :class:`PlainLoader` (a file tuner writes); one :class:`ConfigError` for anything PyYAML or
    its number and date constructors raise."""
    loader = None
    try:
        # the reader refuses control characters at once
        loader = BoundedLoader(text, aliases) if aliases else PlainLoader(text, aliases)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        first = (problem.strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{plain(where)}: not a readable {kind} file: malformed YAML{at}: "
                          f"{plain(first)[:160]}") from None
    except RecursionError:
        raise ConfigError(f"{plain(where)}: not a readable {kind} file: nested too deeply"
                          ) from None
    except Exception as exc:  # noqa: BLE001 - int(), datetime(), base64... raise what they like
        raise ConfigError(f"{plain(where)}: not a readable {kind} file: a value cannot be read "
                          f"({type(exc).__name__}: {plain(str(exc))[:120]})") from None
    finally:
        if loader is not None:
            loader.dispose()


def load(path: str | Path, kind: str, *, aliases: bool = False, limit: int = MAX_BYTES) -> Any:
    """The YAML file at ``path`` (``kind`` names it in messages: "tuned", "sizes", "config"),
    read and parsed within the bounds of the module docstring."""
    return parse(read_text(path, kind, limit), str(path), kind, aliases=aliases)
