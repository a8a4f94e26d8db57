"""RFC 6570 URI templates as Mercure 0.x topic selectors, sans-I/O: parsing (bounded), the
bounds a subscription's templates must keep, and the matcher that tells whether a topic is
one of a template's expansions, in time linear in tokens x length whatever the template."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby

from .errors import HubError

_MAX_TEMPLATE = 2048  # longer selectors are never parsed as templates (see check_selectors)
_VARSPEC = re.compile(
    r"(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})(?:\.?(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2}))*"
    r"(?::[1-9][0-9]{0,3}|\*)?"
)
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~%")
_RESERVED = frozenset(":/?#[]@!$&'()*+,;=")
# operator -> (prefix of a defined expansion, characters its values and separators may use)
OPERATORS: dict[str, tuple[str, frozenset[str]]] = {
    "": ("", _UNRESERVED | {","}),
    "+": ("", _UNRESERVED | _RESERVED),
    "#": ("#", _UNRESERVED | _RESERVED),
    ".": (".", _UNRESERVED | {","}),
    "/": ("/", _UNRESERVED | {"/", ","}),
    ";": (";", _UNRESERVED | {";", "=", ","}),
    "?": ("?", _UNRESERVED | {"&", "=", ","}),
    "&": ("&", _UNRESERVED | {"&", "=", ","}),
}


@dataclass(frozen=True, slots=True)
class Expression:
    """An expression of a template (or a run of adjacent ones with the same operator)."""

    prefix: str
    allowed: frozenset[str]
    repeat: int = 1  # adjacent expressions with the same operator, matched as one token


Token = str | Expression


def parse(
    selector: str, limit: int = _MAX_TEMPLATE, stop: int | None = None
) -> tuple[Token, ...] | None:
    """Literals and expressions of a valid template with at least one expression, else None.

    With ``stop``, parsing ends once more than ``stop`` expressions are read (the tokens so
    far are returned): counting a hostile selector costs no more than the bound it breaks.
    """
    if "{" not in selector or len(selector) > limit:
        return None
    tokens: list[Token] = []
    count = 0
    pos = 0
    while pos < len(selector):
        start = selector.find("{", pos)
        close = selector.find("}", pos)
        if start < 0:
            if close >= 0:
                return None
            tokens.append(selector[pos:])
            break
        if close < start:
            return None
        if start > pos:
            tokens.append(selector[pos:start])
        end = selector.find("}", start)
        if end < 0:
            return None
        body = selector[start + 1 : end]
        if "{" in body or not body:
            return None
        op = body[0] if body[0] in OPERATORS and body[0] != "" else ""
        if body[0] in "=,!@|":  # reserved for future operators
            return None
        names = body[len(op) :].split(",")
        if not all(_VARSPEC.fullmatch(name) for name in names):
            return None
        prefix, allowed = OPERATORS[op]
        last = tokens[-1] if tokens else None
        if isinstance(last, Expression) and (last.prefix, last.allowed) == (prefix, allowed):
            tokens[-1] = Expression(prefix, allowed, last.repeat + 1)
        else:
            tokens.append(Expression(prefix, allowed))
        count += 1
        if stop is not None and count > stop:
            break
        pos = end + 1
    return tuple(tokens)


def expressions(selector: str, stop: int | None = None) -> int:
    """How many expressions a template holds (0 for ``*``, exact topics and non-templates);
    with ``stop``, counting ends past it.

    Matching costs about this many steps per topic; the hub bounds it per subscription.
    """
    tokens = parse(selector, limit=len(selector), stop=stop)
    if tokens is None:
        return 0
    return sum(t.repeat for t in tokens if isinstance(t, Expression))


def check_selectors(selectors: Iterable[str], max_length: int, max_expressions: int) -> int:
    """Refuse (400) a subscription whose templates would make routing costly for everyone;
    return its template expressions, all selectors together.

    Every template of every subscription is tried against each new topic, so one
    subscriber's template of hundreds of expressions slows every publish: bound the length
    of a template and the expressions of a whole subscription.
    """
    max_length = min(max_length, _MAX_TEMPLATE)  # longer ones would match only themselves
    total = 0
    for selector in selectors:
        count = expressions(selector, stop=max_expressions - total)
        if not count:
            continue
        if len(selector) > max_length:
            raise HubError(
                400,
                f"topic template too long: {len(selector)} characters, at most {max_length}",
            )
        total += count
        if total > max_expressions:
            raise HubError(
                400,
                f"too many template expressions: more than {max_expressions} in this "
                "subscription's topic selectors",
            )
    return total


class Template:
    """A parsed URI template selector, for callers that keep their own (the route index)."""

    __slots__ = ("_tokens", "selector")

    def __init__(self, selector: str, tokens: tuple[Token, ...]) -> None:
        self.selector = selector
        self._tokens = tokens

    def matches(self, topic: str) -> bool:
        """Mercure's rule for a template: equal to it, or one of its expansions."""
        return topic == self.selector or template_matches(self._tokens, topic)


def is_template(selector: str) -> bool:
    """True if ``selector`` is a valid URI template with at least one expression."""
    return parse(selector) is not None


# operator's characters -> str.translate table writing each ASCII character as "1" or "0"
_BITS = {
    allowed: {i: "1" if chr(i) in allowed else "0" for i in range(128)}
    for _, allowed in OPERATORS.values()
}


def _mask(text: str, allowed: frozenset[str]) -> int:
    """Bit i is set when text[i] may appear in a value (non-ASCII counts: IRIs)."""
    if not text:
        return 0
    if text.isascii():
        return int(text.translate(_BITS[allowed])[::-1], 2)
    return int("".join("1" if c in allowed or c > "\x7f" else "0" for c in reversed(text)), 2)


# character -> bytes.translate table writing it as "1" and every other byte as "0"
_EQUAL = {c: bytes(49 if b == c else 48 for b in range(256)) for c in range(128)}


def _run_starts(equal: int, run: int) -> int:
    """Bit i is set when ``run`` bits from i on are all set in ``equal``: by doubling, so a
    run of one character costs log(run) steps, not one per place it occurs."""
    found, offset, width, acc = -1, 0, 1, equal
    while run:
        if run & 1:
            found &= acc >> offset
            offset += width
        acc &= acc >> width
        width *= 2
        run >>= 1
    return found


def _positions(text: str, part: str) -> int:
    """Bit i is set when ``part`` occurs in ``text`` at i.

    ASCII text: from one equality mask per character of ``part`` (made by bytes.translate,
    in C), run by run, so the cost is a few big-integer steps per run of ``part``, however
    often it occurs; a dense literal took one Python step per occurrence."""
    if text.isascii() and part.isascii():
        if len(part) > len(text):
            return 0
        raw = text.encode()
        masks: dict[int, int] = {}
        hits = (1 << (len(text) - len(part) + 1)) - 1
        at = 0
        for char, group in groupby(part.encode()):
            run = len(list(group))
            equal = masks.get(char)
            if equal is None:
                equal = masks[char] = int(raw.translate(_EQUAL[char])[::-1] or b"0", 2)
            hits &= _run_starts(equal, run) >> at
            at += run
            if not hits:
                return 0
        return hits
    hits = 0
    at = text.find(part)
    while at >= 0:
        hits |= 1 << at
        at = text.find(part, at + 1)
    return hits


def template_matches(tokens: tuple[Token, ...], topic: str) -> bool:
    """Whether ``topic`` is an expansion of the template.

    Runs a set of positions through the tokens as a bitmask (bit i: "matched up to i"), so
    the cost is linear in tokens x length whatever the template; a backtracking regex can
    take exponential time on adjacent expressions, and selectors come from anyone. Masks
    are made once per operator, and a run of same-operator expressions stops as soon as
    the set of positions stops growing. No bit passes n: masks and hits end before it.
    """
    first, last = tokens[0], tokens[-1]
    if isinstance(first, str) and not topic.startswith(first):
        return False
    if isinstance(last, str) and not topic.endswith(last):
        return False
    n = len(topic)
    masks: dict[frozenset[str], int] = {}
    prefixes: dict[str, int] = {}
    reach = 1  # position 0
    for token in tokens:
        if isinstance(token, str):
            reach = (reach & _positions(topic, token)) << len(token)
        else:
            allowed = masks.get(token.allowed)
            if allowed is None:
                allowed = masks[token.allowed] = _mask(topic, token.allowed)
            at_prefix = 0
            if token.prefix:
                at_prefix = prefixes.get(token.prefix, -1)
                if at_prefix < 0:
                    at_prefix = prefixes[token.prefix] = _positions(topic, token.prefix)
            for _ in range(token.repeat):
                starts = (reach & at_prefix) << 1 if token.prefix else reach
                begin = starts & allowed
                # Adding the run starts to the mask carries through each run of allowed
                # characters: the XORs leave exactly the positions one or more characters on.
                after = (allowed + begin) ^ allowed ^ begin
                grown = reach | after  # an undefined variable expands to nothing
                if grown == reach:
                    break  # a fixed point: the rest of the run adds nothing either
                reach = grown
        if not reach:
            return False
    return bool(reach >> n & 1)
