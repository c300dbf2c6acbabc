"""Strict, bounded JSON for untrusted lines: every way a line can defeat a parser or an encoder.

``json.loads`` accepts things a dataset line must not carry, and fails in ways other than
``JSONDecodeError``:

- ``NaN``/``Infinity`` literals (JavaScript, not JSON: RFC 8259 section 6) and numbers that
  overflow a float to infinity: ``json.dumps`` writes them back as ``NaN``/``Infinity``, which
  other JSON readers refuse;
- integers of thousands of digits: ``int()`` refuses more than 4300 digits with a ValueError
  (https://docs.python.org/3/library/stdtypes.html#int-max-str-digits) and is quadratic below;
- deep nesting: the parser recurses once per level and raises RecursionError;
- ``"\\ud800"``: valid JSON whose string holds a lone surrogate, which no UTF-8 encoder can write
  (saving such a record fails long after it was called valid);
- duplicate keys: the last one silently wins, so a saved record differs from its line.

Every message says what is wrong, where (the field) and what to do.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata

MAX_DEPTH = 64  # levels of objects and arrays in one line; the record itself is level 1
MAX_DIGITS = 1000  # digits of one integer (Python's own limit is 4300, and slow well below it)

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls but tab, LF and CR; DEL; C1 controls. NUL and friends are not text and break tools.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class LineProblem(ValueError):
    """A line that cannot be a record; the message is the reason shown for it."""


def _escape(c: str) -> str:
    if c.isprintable():
        return c
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def show(value: object, limit: int = 40) -> str:
    """``value`` quoted for a message: unprintable characters (controls, surrogates) escaped."""
    s = str(value)
    if len(s) <= limit and s.isprintable():
        return f'"{s}"'
    return f'"{"".join(map(_escape, s[:limit]))}{"…" if len(s) > limit else ""}"'


def _int(s: str) -> int:
    digits = len(s) - s.startswith("-")
    if digits > MAX_DIGITS:
        raise LineProblem(f"a number has {digits} digits (at most {MAX_DIGITS}); "
                          "write such a value as a string")
    try:
        return int(s)
    except ValueError:  # the process lowered sys.set_int_max_str_digits below MAX_DIGITS
        raise LineProblem(f"a number has {digits} digits, too many for this Python; "
                          "write it as a string") from None


def _float(s: str) -> float:
    value = float(s)
    if math.isinf(value):
        raise LineProblem(f"the number {s[:24]}{'…' if len(s) > 24 else ''} is too large: it "
                          "overflows to infinity; write it as a string")
    return value


def _constant(name: str):
    raise LineProblem(f"{name} is not valid JSON (it is JavaScript); write null or a string")


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise LineProblem(f"the key {show(dup)} appears twice in one object; keep only one")
    return obj


TOO_DEEP = (f"the line is nested more than {MAX_DEPTH} levels deep; a record is one object of "
            "text, label and plain metadata: flatten it")


def loads(text: str) -> object:
    """Parse one line strictly; raises LineProblem (only) with the reason."""
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant,
                          object_pairs_hook=_pairs)
    except LineProblem:
        raise
    except json.JSONDecodeError as exc:
        hint = ("; write it as an escape (\\t, \\n) or remove it" if "control character" in exc.msg
                else "; each line must be one complete JSON object")
        msg = exc.msg.removesuffix(" at")  # "Invalid control character at"
        raise LineProblem(f"invalid JSON: {msg} at column {exc.colno}{hint}") from None
    except RecursionError:
        raise LineProblem(TOO_DEEP) from None
    except ValueError as exc:
        raise LineProblem(f"unreadable JSON ({type(exc).__name__}: {str(exc)[:80]})") from None


def loads_lenient(text: str) -> object | None:
    """Parse for a guess at the file's shape (an array? one object?): never raises, None if not JSON."""
    try:
        return json.loads(text, parse_int=len, parse_float=len, parse_constant=len)
    except (ValueError, RecursionError):
        return None


def _surrogate_message(where: str, match: re.Match) -> str:
    return (f"{where} contains a lone surrogate \\u{ord(match.group()):04x} (character "
            f"{match.start() + 1}), which cannot be written as UTF-8: a \\u escape pair is cut "
            "in half; fix or remove that escape")


def _where(path: tuple) -> str:
    if not path:
        return "the line"
    name = show(path[0])
    for step in path[1:]:
        name += f"[{step}]" if isinstance(step, int) else f"[{show(step)}]"
    return f"field {name}"


def find_problem(obj: object) -> str | None:
    """The first key or string that cannot be written as UTF-8, or nesting over MAX_DEPTH.

    Iterative, so the check itself cannot hit the recursion limit.
    """
    stack: list[tuple[object, tuple, int]] = [(obj, (), 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            match = _SURROGATE.search(value)
            if match:
                return _surrogate_message(_where(path), match)
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                return TOO_DEEP
            items = list(value.items() if isinstance(value, dict) else enumerate(value))
            for key, item in items:
                match = _SURROGATE.search(key) if isinstance(key, str) else None
                if match:
                    return _surrogate_message(f"a key in {_where(path)}", match)
            stack.extend((item, path + (key,), depth + 1) for key, item in reversed(items))
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{_where(path)} is {value}, which is not valid JSON; write null or a string"
    return None


def storable(obj: object) -> bool:
    """Whether ``obj`` can be written as a JSON line in UTF-8 and read back the same."""
    return find_problem(obj) is None


def text_problem(value: str, where: str) -> str | None:
    """Why a text (or label) cannot be trained on or stored, or None.

    Tab, LF and CR are allowed (they are whitespace to every tokenizer and are escaped when
    saved); other control characters, lone surrogates and text without a single visible
    character are not.
    """
    match = _SURROGATE.search(value)
    if match:
        return _surrogate_message(where, match)
    match = _CONTROL.search(value)
    if match:
        name = {"\x00": "NUL", "\x1b": "ESC", "\x7f": "DEL"}.get(match.group(), "")  # no names
        return (f"{where} contains the control character U+{ord(match.group()):04X}"
                f"{f' ({name})' if name else ''} at character {match.start() + 1}; control "
                "characters other than tab and line breaks are not text: remove it")
    if not any(unicodedata.category(c)[0] in "LNPS" for c in value):
        return (f"{where} has no visible characters (only spaces, combining marks or invisible "
                "format characters); write a sentence or drop the line")
    return None
