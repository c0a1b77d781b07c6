"""Calico's label selector language, as BGPPeer.nodeSelector/peerSelector and IPPool.nodeSelector
use it (libcalico-go/lib/selector): ``all()``, ``has(k)``, ``!has(k)``, ``k == 'v'``, ``k != 'v'``,
``k in {'a', 'b'}``, ``k not in {...}``, ``!``, ``&&``, ``||`` and parentheses.  Not Kubernetes'
selector syntax: a BGPPeer's ``nodeSelector: has(routeReflector)`` means a label key exists.

Knows nothing but the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Labels = Mapping[str, str]
Predicate = Callable[[Labels], bool]

_TOKEN = re.compile(r"""\s*(?:(?P<op>&&|\|\||==|!=|[!(){},])|(?P<str>"[^"]*"|'[^']*')|(?P<word>[A-Za-z0-9_./-]+))""")


class SelectorError(ValueError):
    pass


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise SelectorError(f"selector {text!r}: unexpected {text[pos:].strip()[:10]!r} at {pos}; "
                                "fix: write it as Calico does, e.g. has(routeReflector) or rack == 'a'")
        out.append(m.group("op") or m.group("str") or m.group("word"))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def fail(self, want: str) -> SelectorError:
        got = self.toks[self.i] if self.i < len(self.toks) else "the end"
        return SelectorError(f"selector {self.text!r}: expected {want}, got {got!r}; "
                             "fix: write it as Calico does, e.g. has(routeReflector) or rack == 'a'")

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise self.fail(repr(want) if want else "more")
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        if not self.toks:
            return lambda labels: True  # an empty selector selects everything, as all() does
        pred = self.or_()
        if self.peek() is not None:
            raise self.fail("&&, || or the end")
        return pred

    def or_(self) -> Predicate:
        terms = [self.and_()]
        while self.peek() == "||":
            self.take()
            terms.append(self.and_())
        return terms[0] if len(terms) == 1 else (lambda labels: any(t(labels) for t in terms))

    def and_(self) -> Predicate:
        terms = [self.unary()]
        while self.peek() == "&&":
            self.take()
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else (lambda labels: all(t(labels) for t in terms))

    def unary(self) -> Predicate:
        tok = self.peek()
        if tok == "!":
            self.take()
            inner = self.unary()
            return lambda labels: not inner(labels)
        if tok == "(":
            self.take()
            inner = self.or_()
            self.take(")")
            return inner
        return self.term()

    def string(self) -> str:
        tok = self.take()
        if len(tok) < 2 or tok[0] not in "'\"":
            self.i -= 1
            raise self.fail("a quoted value")
        return tok[1:-1]

    def term(self) -> Predicate:
        word = self.take()
        if word in ("all", "has") and self.peek() == "(":
            self.take("(")
            if word == "all":
                self.take(")")
                return lambda labels: True
            key = self.take()
            self.take(")")
            return lambda labels: key in labels
        if not re.fullmatch(r"[A-Za-z0-9_./-]+", word):
            self.i -= 1
            raise self.fail("a label key, all() or has(key)")
        op = self.take()
        if op == "==":
            value = self.string()
            return lambda labels: labels.get(word) == value
        if op == "!=":
            value = self.string()
            return lambda labels: labels.get(word) != value
        negate = False
        if op == "not":
            negate, op = True, self.take()
        if op != "in":
            self.i -= 1
            raise self.fail("==, !=, in or not in")
        self.take("{")
        values = set()
        while self.peek() != "}":
            values.add(self.string())
            if self.peek() == ",":
                self.take()
        self.take("}")
        if negate:
            return lambda labels: labels.get(word) not in values
        return lambda labels: word in labels and labels[word] in values


def compile_selector(text: str | None) -> Predicate:
    """A predicate over a label map; raises SelectorError naming the selector and what is wrong."""
    return _Parser(text or "").parse()


def matches(text: str | None, labels: Labels) -> bool:
    return compile_selector(text)(labels)
