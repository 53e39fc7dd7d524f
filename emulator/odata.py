"""Graph's query language over users: ``$filter`` and ``$search``, and the errors Graph answers.

``$filter``: comparisons (``eq ne ge le in``, ``eq null``), ``startsWith`` and
``endsWith``, ``not``, ``and``/``or`` with parentheses, ``any()`` over a
collection and ``/$count`` of one. Which operator works on which property, and
which only as an advanced query, is data: ``userschema``.

Errors as Graph answers them. Syntax errors come from Graph's OData parser,
relayed after "Invalid filter clause: " with code BadRequest, in the parser's
own words (Microsoft.OData.Core's resource texts, e.g. "')' or ',' expected at
position {0} in '{1}'."); users report them that way, e.g. "Invalid filter clause:
Could not find a property named 'foo' on type 'microsoft.graph.message'." and
https://github.com/microsoftgraph/msgraph-sdk-dotnet/issues/1190 (code BadRequest on /users).
An operator a property does not support is Request_UnsupportedQuery
(https://learn.microsoft.com/graph/aad-advanced-queries#error-handling-for-advanced-queries-on-directory-objects).

``$search``: ``"property:text"`` clauses joined by ``AND``/``OR``, with
parentheses and ``\\"`` inside a clause. displayName is tokenized (spaces, a
lower-to-upper case change, letters against digits, symbols; words joined only
by symbols also match together) and every word of the text must start a token;
any other string property matches from the start of its whole value.
https://learn.microsoft.com/graph/search-query-parameter#using-search-on-directory-object-collections
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .userschema import ADVANCED, SPELLING, USER, Property

# Properties of microsoft.graph.user; $select of others is a 400 as in Graph.
PROPERTIES = frozenset(USER)
_BY_LOWER = {name.lower(): prop for name, prop in USER.items()}

Pred = Callable[[dict[str, Any]], bool]


class QueryError(ValueError):
    """A query option Graph would reject; ``code`` is Graph's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_property(name: str) -> None:
    if name not in PROPERTIES:
        raise QueryError("Request_BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")


# -- $filter --------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<open>'(?:[^']|'')*$)
  | (?P<date>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-]))
  | (?P<num>-?\d+(?![\w.]))
  | (?P<name>\$?[A-Za-z_][\w]*)
  | (?P<punct>[(),:/])
  | (?P<bad>\S)
    )""",
    re.X,
)
_EDM = {"s": "Edm.String", "b": "Edm.Boolean", "d": "Edm.DateTimeOffset", "S": "Collection(Edm.String)"}
_KIND = {"eq": "Equal", "ne": "NotEqual", "ge": "GreaterThanOrEqual", "le": "LessThanOrEqual"}
_MAX_DEPTH = 100


def _bad(detail: str) -> QueryError:
    return QueryError("BadRequest", f"Invalid filter clause: {detail}")


def _unsupported(prop: str) -> QueryError:
    return QueryError(
        "Request_UnsupportedQuery",
        f"Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'.",
    )


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _ordered(value: Any, bound: Any, *, ge: bool) -> bool:
    """``value ge|le bound``; a missing value, or one of another type (a complex value), matches neither."""
    if value is None or type(value) is not type(bound):
        return False
    return bool(value >= bound if ge else value <= bound)


class _Parser:
    """A recursive-descent parser over Graph's $filter; ``needs`` is the first advanced-only operator seen."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:  # trailing whitespace
                break
            kind = m.lastgroup or "bad"
            value = m.group(kind)
            start = m.start(kind)
            if kind == "open":
                raise _bad(f"There is an unterminated string literal at position {len(text)} in '{text}'.")
            if kind == "bad":
                raise _bad(f"Syntax error: character '{value}' is not valid at position {start} in '{text}'.")
            self.tokens.append((kind, value, start))
            pos = m.end()
        self.i = 0
        self.depth = 0
        self.needs: str | None = None

    # tokens
    def peek(self, offset: int = 0) -> tuple[str, str, int]:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("end", "", len(self.text))

    def word(self, *words: str) -> bool:
        kind, value, _ = self.peek()
        return kind == "name" and value.lower() in words

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, value: str, alternatives: str = "") -> None:
        _kind, got, pos = self.peek()
        if got != value:
            if alternatives:
                raise _bad(f"{alternatives} expected at position {pos} in '{self.text}'.")
            raise _bad(f"'{value}' expected at position {pos} in '{self.text}'.")
        self.i += 1

    def syntax_error(self) -> QueryError:
        return _bad(f"Syntax error at position {self.peek()[2]} in '{self.text}'.")

    # support
    def need(self, prop: Property, op: str) -> None:
        support = prop.support.get(op)
        if support is None:
            raise _unsupported(prop.name)
        if support == ADVANCED and self.needs is None:
            self.needs = SPELLING.get(op, op) if op in ("ne", "not", "endswith", "null", "$count") else prop.name

    # grammar
    def parse(self) -> Pred:
        if not self.tokens:
            raise _bad(f"Expression expected at position 0 in '{self.text}'.")
        pred = self.or_expr()
        if self.peek()[0] != "end":
            raise self.syntax_error()
        return pred

    def or_expr(self, lam: str | None = None, coll: Property | None = None) -> Pred:
        preds = [self.and_expr(lam, coll)]
        while self.word("or"):
            self.take()
            preds.append(self.and_expr(lam, coll))
        return preds[0] if len(preds) == 1 else (lambda u: any(p(u) for p in preds))

    def and_expr(self, lam: str | None, coll: Property | None) -> Pred:
        preds = [self.unary(lam, coll)]
        while self.word("and"):
            self.take()
            preds.append(self.unary(lam, coll))
        return preds[0] if len(preds) == 1 else (lambda u: all(p(u) for p in preds))

    def unary(self, lam: str | None, coll: Property | None) -> Pred:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _bad("The recursion limit has been exceeded.")
        try:
            if self.word("not") and self.peek(1)[1] not in ("eq", "ne", "ge", "le", "in", "/"):
                self.take()
                start = self.i
                inner = self.unary(lam, coll)
                for prop in self.properties_in(start, self.i):
                    self.need(prop, "not")
                return lambda u: not inner(u)
            return self.primary(lam, coll)
        finally:
            self.depth -= 1

    def properties_in(self, start: int, end: int) -> list[Property]:
        return [_BY_LOWER[v.lower()] for k, v, _ in self.tokens[start:end] if k == "name" and v.lower() in _BY_LOWER]

    def primary(self, lam: str | None, coll: Property | None) -> Pred:
        kind, value, _pos = self.peek()
        if value == "(":
            self.take()
            pred = self.or_expr(lam, coll)
            self.expect(")", "')' or operator")
            return pred
        if kind == "name" and self.peek(1)[1] == "(":
            return self.function(lam, coll)
        if kind != "name":
            raise self.syntax_error()
        return self.comparison(lam, coll)

    def function(self, lam: str | None, coll: Property | None) -> Pred:
        _, name, _ = self.take()
        func = name.lower()
        if func not in ("startswith", "endswith"):
            raise _bad(
                f"An unknown function with name '{name}' was found. "
                "This may also be a function import or a key lookup on a navigation property, which is not allowed."
            )
        self.expect("(")
        get, prop = self.operand(lam, coll)
        self.expect(",", "')' or ','")
        kind, literal, pos = self.take()
        if kind != "str":
            raise _bad(f"Syntax error at position {pos} in '{self.text}'.")
        self.expect(")", "')' or ','")
        if prop.collection and coll is None:
            raise _bad(f"No function signature for the function with name '{name}' matches the specified arguments.")
        self.need(prop, func)
        text = literal[1:-1].replace("''", "'").lower()
        if func == "startswith":
            return lambda u: str(get(u) or "").lower().startswith(text)
        return lambda u: str(get(u) or "").lower().endswith(text)

    def operand(self, lam: str | None, coll: Property | None) -> tuple[Callable[[dict[str, Any]], Any], Property]:
        """A property path (or the lambda variable): a getter and the property whose rules apply."""
        kind, value, pos = self.take()
        if kind != "name":
            raise _bad(f"Syntax error at position {pos} in '{self.text}'.")
        if lam is not None and value == lam and coll is not None:
            if self.peek()[1] == "/":
                self.take()
                _, sub, _ = self.take()
                return (lambda u, s=sub: u.get(s) if isinstance(u, dict) else None), coll
            return (lambda u: u), coll
        if lam is not None and coll is not None:
            # Inside any(), names resolve against the collection's element, not the user.
            element = "Edm.String" if coll.kind == "S" else f"microsoft.graph.{coll.name}"
            raise _bad(f"Could not find a property named '{value}' on type '{element}'.")
        prop = _BY_LOWER.get(value.lower())
        if prop is None:
            raise _bad(f"Could not find a property named '{value}' on type 'microsoft.graph.user'.")
        if self.peek()[1] == "/" and prop.kind == "c":
            self.take()
            _, sub, _ = self.take()
            return (lambda u, p=prop.name, s=sub: (u.get(p) or {}).get(s)), prop
        return (lambda u, p=prop.name: u.get(p)), prop

    def literal(self) -> tuple[str, Any]:
        kind, value, pos = self.take()
        if kind == "str":
            return "s", value[1:-1].replace("''", "'")
        if kind == "date":
            return "d", value
        if kind in ("guid", "num"):
            return kind, value if kind == "guid" else int(value)
        if kind == "name" and value.lower() in ("true", "false"):
            return "b", value.lower() == "true"
        if kind == "name" and value.lower() == "null":
            return "null", None
        if kind == "name":
            if value.lower() in _BY_LOWER:
                raise _unsupported(value)  # Graph compares a property with literals only
            raise _bad(f"Could not find a property named '{value}' on type 'microsoft.graph.user'.")
        raise _bad(f"Expression expected at position {pos} in '{self.text}'.")

    def comparison(self, lam: str | None, coll: Property | None) -> Pred:
        get, prop = self.operand(lam, coll)
        if self.peek()[1] == "/" and prop.collection and (lam is None or coll is None):
            return self.collection_op(prop)
        kind, op, pos = self.take()
        op = op.lower()
        if kind != "name" or op not in ("eq", "ne", "ge", "le", "in", "gt", "lt"):
            raise _bad(f"Syntax error at position {pos} in '{self.text}'.")
        if op in ("gt", "lt"):
            raise _unsupported(prop.name)  # directory objects offer ge and le only
        if op == "in":
            return self.in_list(get, prop)
        lit_kind, value = self.literal()
        if value is None:
            self.need(prop, "eq" if op == "eq" else op)
            self.need(prop, "null")
            if op not in ("eq", "ne"):
                raise _unsupported(prop.name)
            return lambda u: (get(u) in (None, [])) == (op == "eq")
        self.need(prop, op)
        self.check_type(prop, lit_kind, op, inside=coll is not None and lam is not None)
        folded = _fold(value)
        if op == "eq":
            return lambda u: _fold(get(u)) == folded
        if op == "ne":
            return lambda u: _fold(get(u)) != folded
        if op == "ge":
            return lambda u: _ordered(_fold(get(u)), folded, ge=True)
        return lambda u: _ordered(_fold(get(u)), folded, ge=False)

    def check_type(self, prop: Property, lit_kind: str, op: str, *, inside: bool) -> None:
        expected = {"s": "s", "b": "b", "d": "d", "S": "s", "C": "guid", "c": "s"}[prop.kind]
        if prop.collection and not inside:
            got = "S" if prop.kind == "S" else "C"
        elif expected == "guid" and lit_kind in ("guid", "s"):
            return
        elif prop.kind == "c" and lit_kind in ("s", "d", "guid"):
            return  # a complex property's sub-properties are strings or dates; the table has no types for them
        elif lit_kind == expected or (expected == "s" and lit_kind == "guid"):
            return
        else:
            got = prop.kind if prop.kind in _EDM else "s"
        literal_type = {"s": "Edm.String", "b": "Edm.Boolean", "d": "Edm.DateTimeOffset", "guid": "Edm.Guid"}.get(
            lit_kind, "Edm.Int32"
        )
        raise _bad(
            "A binary operator with incompatible types was detected. "
            f"Found operand types '{_EDM.get(got, 'Collection(microsoft.graph.' + prop.name + ')')}' and "
            f"'{literal_type}' for operator kind '{_KIND[op]}'."
        )

    def in_list(self, get: Callable[[dict[str, Any]], Any], prop: Property) -> Pred:
        self.need(prop, "in")
        self.expect("(")
        values: set[Any] = set()
        while True:
            _lit_kind, value = self.literal()
            values.add(_fold(value))
            if self.peek()[1] == ",":
                self.take()
                continue
            self.expect(")", "')' or ','")
            break
        return lambda u: _fold(get(u)) in values

    def collection_op(self, prop: Property) -> Pred:
        self.take()  # '/'
        kind, name, pos = self.take()
        if name == "$count":
            self.need(prop, "$count")
            _, op, opos = self.take()
            if op.lower() not in ("eq", "ne"):
                raise _bad(f"Syntax error at position {opos} in '{self.text}'.")
            k, n, npos = self.take()
            if k != "num":
                raise _bad(f"Syntax error at position {npos} in '{self.text}'.")
            want, negate = int(n), op.lower() == "ne"
            return lambda u: (len(u.get(prop.name) or []) == want) != negate
        if name.lower() != "any":
            raise _bad(f"Syntax error at position {pos} in '{self.text}'.")
        self.expect("(")
        kind, var, vpos = self.take()
        if kind != "name":
            raise _bad(f"Syntax error at position {vpos} in '{self.text}'.")
        self.expect(":")
        inner = self.or_expr(var, prop)
        self.expect(")", "')' or operator")
        return lambda u: any(inner(item) for item in (u.get(prop.name) or []))


def compile_filter(expression: str) -> tuple[Pred, str | None]:
    """Compile ``$filter``: the predicate and the first operator (or property) that needs an advanced query."""
    parser = _Parser(expression.strip())
    pred = parser.parse()
    return pred, parser.needs


def parse_filter(expression: str) -> Pred:
    """Compile ``$filter``; ``QueryError`` for anything Graph would refuse."""
    return compile_filter(expression)[0]


# -- $search --------------------------------------------------------------------------------------

_SEARCH_TOKEN = re.compile(r'\s*(?:(?P<clause>"(?:[^"\\]|\\.)*")|(?P<op>AND|OR)(?=[\s("]|$)|(?P<paren>[()])|(?P<bad>\S+))')
_TOKENIZED = frozenset({"displayName"})  # and description, which users do not have


def _search_error() -> QueryError:
    return QueryError(
        "Request_BadRequest",
        'Invalid $search: use quoted clauses such as "displayName:ada" joined by AND or OR, with parentheses if needed.',
    )


def search_tokens(value: str) -> set[str]:
    """The tokens Graph makes of a displayName: words split at spaces, case changes, digits and symbols."""
    tokens: set[str] = set()
    for chunk in value.split():
        # Lower-to-upper changes split words ("HelloWorld"); an upper run stays one word ("HELLOworld").
        parts: list[str] = []
        for w in re.findall(r"[^\W\d_]+|\d+|[\W_]", chunk):
            parts += re.findall(r"[A-Z]*[^A-Z\W\d_]*", w) if w.isalpha() else [w]
        words = [p.lower() for p in parts if p]
        tokens.update(w for w in words if w.isalnum())
        tokens.update(w for w in words if not w.isalnum())
        if any(not w.isalnum() for w in words):  # words joined only by symbols match together too
            tokens.add("".join(w for w in words if w.isalnum()))
    return {t for t in tokens if t}


def _clause(raw: str) -> Pred:
    body = re.sub(r"\\(.)", r"\1", raw[1:-1])
    name, sep, text = body.partition(":")
    if not sep or not name:
        raise _search_error()
    check_property(name)
    if USER[name].kind != "s":
        raise QueryError("Request_UnsupportedQuery", f"Property '{name}' does not support $search; search string properties.")
    text = text.strip()
    if name in _TOKENIZED:
        words = [t for t in search_tokens(text) if t.isalnum()] or [text.lower()]
        return lambda u: (lambda have: all(any(h.startswith(w) for h in have) for w in words))(
            search_tokens(str(u.get(name) or ""))
        )
    prefix = text.lower()
    return lambda u: str(u.get(name) or "").lower().startswith(prefix)


def parse_search(expression: str) -> Pred:
    """Compile ``$search``: quoted ``"prop:text"`` clauses, AND binding tighter than OR, parentheses."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = expression.strip()
    while pos < len(text):
        m = _SEARCH_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            break
        kind = m.lastgroup or "bad"
        if kind == "bad":
            raise _search_error()
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    i = 0

    def peek() -> tuple[str, str]:
        return tokens[i] if i < len(tokens) else ("end", "")

    def alternatives(depth: int) -> Pred:
        nonlocal i
        if depth > _MAX_DEPTH:
            raise _search_error()
        preds = [conjunction(depth)]
        while peek() == ("op", "OR"):
            i += 1
            preds.append(conjunction(depth))
        return lambda u: any(p(u) for p in preds)

    def conjunction(depth: int) -> Pred:
        nonlocal i
        preds = [atom(depth)]
        while peek() == ("op", "AND") or peek()[0] in ("clause",) or peek() == ("paren", "("):
            if peek()[0] == "op":
                i += 1
            preds.append(atom(depth))
        return lambda u: all(p(u) for p in preds)

    def atom(depth: int) -> Pred:
        nonlocal i
        kind, value = peek()
        i += 1
        if kind == "clause":
            return _clause(value)
        if (kind, value) == ("paren", "("):
            pred = alternatives(depth + 1)
            if peek() != ("paren", ")"):
                raise _search_error()
            i += 1
            return pred
        raise _search_error()

    pred = alternatives(0)
    if i != len(tokens):
        raise _search_error()
    return pred
