"""Maps JSON pointers to line numbers in JSON and YAML config text, so problems can name the line."""
from __future__ import annotations

from json.decoder import scanstring

import yaml

_WS = " \t\r\n"
_DELIMS = ",:]}" + _WS


def escape(segment: object) -> str:
    """One JSON-pointer segment (RFC 6901): ``~`` → ``~0``, ``/`` → ``~1``."""
    return str(segment).replace("~", "~0").replace("/", "~1")


def join(pointer: str, *segments: object) -> str:
    """``pointer`` extended by ``segments`` (keys or list indexes), each escaped."""
    return pointer + "".join("/" + escape(s) for s in segments)


class LineIndex:
    """Line numbers (1-based) by JSON pointer; an unknown pointer falls back to its nearest ancestor."""

    def __init__(self, lines: dict[str, int] | None = None) -> None:
        self.lines = dict(lines or {})

    def line(self, pointer: str) -> int | None:
        """The line of ``pointer``'s key (object member) or value (array item), or of its ancestor."""
        while True:
            if pointer in self.lines:
                return self.lines[pointer]
            if not pointer:
                return None
            pointer = pointer.rsplit("/", 1)[0]


def json_lines(text: str) -> LineIndex:
    """Index a JSON document's text: each member's key line, each array item's line.

    Works on text that ``json.loads`` accepted; on anything else it indexes what it can and stops.
    Iterative, so deep nesting cannot exhaust the Python stack.
    """
    starts = _line_starts(text)
    lines: dict[str, int] = {}
    # frame: [kind ("{" | "["), pointer, expecting_key, current member pointer, item count]
    stack: list[list] = []
    pos, end = 0, len(text)
    try:
        while pos < end:
            ch = text[pos]
            if ch in _WS or ch == ":":
                pos += 1
                continue
            if ch == ",":
                if stack and stack[-1][0] == "{":
                    stack[-1][2] = True
                pos += 1
                continue
            if ch in "}]":
                if stack:
                    stack.pop()
                pos += 1
                continue
            frame = stack[-1] if stack else None
            if frame is not None and frame[0] == "{" and frame[2]:
                if ch != '"':
                    break
                key, pos = scanstring(text, pos + 1)
                frame[3] = join(frame[1], key)
                frame[2] = False
                lines[frame[3]] = _line_of(starts, pos)
                continue
            pointer = _value_pointer(frame, lines, starts, pos)
            if ch in "{[":
                stack.append([ch, pointer, ch == "{", "", 0])
                pos += 1
            elif ch == '"':
                _, pos = scanstring(text, pos + 1)
            else:
                while pos < end and text[pos] not in _DELIMS:
                    pos += 1
    except ValueError:
        pass  # malformed text: keep what was indexed so far
    return LineIndex(lines)


def _value_pointer(frame: list | None, lines: dict[str, int], starts: list[int], pos: int) -> str:
    if frame is None:
        lines.setdefault("", _line_of(starts, pos))
        return ""
    if frame[0] == "{":
        return frame[3]
    pointer = join(frame[1], frame[4])
    frame[4] += 1
    lines[pointer] = _line_of(starts, pos)
    return pointer


def _line_starts(text: str) -> list[int]:
    starts = [0]
    index = text.find("\n")
    while index >= 0:
        starts.append(index + 1)
        index = text.find("\n", index + 1)
    return starts


def _line_of(starts: list[int], pos: int) -> int:
    lo, hi = 0, len(starts)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if starts[mid] <= pos:
            lo = mid
        else:
            hi = mid
    return lo + 1


def yaml_lines(text: str) -> LineIndex:
    """Index a YAML document's text through ``yaml.compose`` node marks; empty if it does not compose."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return LineIndex()
    lines: dict[str, int] = {}
    if root is None:
        return LineIndex()
    lines[""] = root.start_mark.line + 1
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while todo:
        node, pointer = todo.pop()
        if id(node) in seen:  # aliases may share nodes
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = join(pointer, key_node.value if isinstance(key_node, yaml.ScalarNode) else "?")
                lines[child] = key_node.start_mark.line + 1
                todo.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = join(pointer, index)
                lines[child] = item.start_mark.line + 1
                todo.append((item, child))
    return LineIndex(lines)
