"""Graph's query language in the emulator: or, ge/le, any(), /$count, OData's error texts, $search tokens, id case."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.odata import QueryError, compile_filter, parse_search, search_tokens
from emulator.state import Tenant

ADA: dict[str, Any] = {
    "id": "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
    "displayName": "Ada Lovelace-Byron",
    "mail": "ada.lovelace@contoso.example",
    "userPrincipalName": "ada.lovelace@contoso.example",
    "accountEnabled": True,
    "department": "Research",
    "createdDateTime": "2019-06-01T09:00:00Z",
    "otherMails": ["ada@home.example"],
    "proxyAddresses": ["SMTP:ada@contoso.example", "smtp:ada@alias.example"],
    "businessPhones": [],
    "assignedLicenses": [{"skuId": "53818b1b-4a27-454b-8896-0dba576410e6"}],
    "onPremisesExtensionAttributes": {"extensionAttribute1": "blue"},
}


@pytest.mark.parametrize(
    ("expression", "matches", "needs"),
    [
        ("department eq 'Sales' or department eq 'research'", True, None),
        ("(department eq 'Sales' or accountEnabled eq false) and mail eq 'x'", False, None),
        ("createdDateTime ge 2019-01-01T00:00:00Z and createdDateTime le 2020-01-01T00:00:00Z", True, None),
        ("createdDateTime ge 2020-01-01T00:00:00Z", False, None),
        ("otherMails/any(m:m eq 'ADA@home.example')", True, None),
        ("proxyAddresses/any(p:startswith(p,'smtp:ada@alias'))", True, None),
        ("proxyAddresses/any(p:endswith(p,'@contoso.example'))", True, "endsWith"),
        ("assignedLicenses/any(x:x/skuId eq 53818b1b-4a27-454b-8896-0dba576410e6)", True, None),
        ("assignedLicenses/$count eq 0", False, "$count"),
        ("otherMails/$count ne 0", True, "$count"),
        ("onPremisesExtensionAttributes/extensionAttribute1 eq 'blue'", True, "onPremisesExtensionAttributes"),
        ("NOT startsWith(displayName,'Grace') OR accountEnabled eq false", True, "not"),
        ("id eq '3F2504E0-4F89-41D3-9A0C-0305E82C3301'", True, None),
        ("accountEnabled ge true", True, "accountEnabled"),
        # A complex value compared as a whole matches nothing (it used to raise TypeError: a 500).
        ("onPremisesExtensionAttributes ge 2020-01-01T00:00:00Z", False, "onPremisesExtensionAttributes"),
    ],
)
def test_operators(expression: str, matches: bool, needs: str | None) -> None:
    """Each operator Graph documents for users evaluates as Graph would, and names what needs advanced mode."""
    pred, needed = compile_filter(expression)
    assert pred(ADA) is matches and needed == needs


@pytest.mark.parametrize(
    ("expression", "code", "message"),
    [
        ("displayName eq Ada", "BadRequest", "Could not find a property named 'Ada' on type 'microsoft.graph.user'."),
        ("foo eq 1", "BadRequest", "Could not find a property named 'foo' on type 'microsoft.graph.user'."),
        ("contains(displayName,'a')", "BadRequest", "An unknown function with name 'contains' was found."),
        ("startswith(displayName,'Ada'", "BadRequest", "')' or ',' expected at position 28 in 'startswith(displayName,'Ada''."),
        ("displayName eq 'Ada", "BadRequest", "There is an unterminated string literal at position 19"),
        ("accountEnabled eq 'true'", "BadRequest", "Found operand types 'Edm.Boolean' and 'Edm.String'"),
        ("businessPhones eq '1'", "BadRequest", "Found operand types 'Collection(Edm.String)'"),
        ("accountEnabled eq true and", "BadRequest", "Syntax error at position 26"),
        ("displayName eq 'a' ; drop", "BadRequest", "Syntax error: character ';' is not valid at position 19"),
        ("proxyAddresses/any(p:mail eq 'x')", "BadRequest", "Could not find a property named 'mail' on type 'Edm.String'."),
        ("displayName gt 'a'", "Request_UnsupportedQuery", "property 'displayName' of resource 'User'"),
        ("endswith(displayName,'e')", "Request_UnsupportedQuery", "property 'displayName' of resource 'User'"),
        ("(" * 200 + "accountEnabled eq true" + ")" * 200, "BadRequest", "The recursion limit has been exceeded."),
    ],
)
def test_errors_name_the_problem(expression: str, code: str, message: str) -> None:
    """Wrong filters get Graph's own code and text (its OData parser's words after 'Invalid filter clause: ')."""
    with pytest.raises(QueryError) as caught:
        compile_filter(expression)
    assert caught.value.code == code and message in caught.value.message
    if code == "BadRequest":
        assert caught.value.message.startswith("Invalid filter clause: ")


def test_hostile_filters_only_ever_raise_query_errors() -> None:
    """Random token soup compiles to a predicate or a QueryError, and a predicate never raises on any user."""
    import random

    rng = random.Random(7)
    atoms = ["displayName", "accountEnabled", "otherMails", "assignedLicenses", "createdDateTime", "eq", "ge", "le"]
    atoms += ["in", "and", "or", "not", "any", "$count", "(", ")", ",", ":", "/", "'a'", "'", "true", "null", "1"]
    atoms += ["2020-01-01T00:00:00Z", "startswith", "x", "onPremisesExtensionAttributes", "signInActivity"]
    for _ in range(3000):
        expression = " ".join(rng.choice(atoms) for _ in range(rng.randint(1, 9)))
        try:
            pred, _ = compile_filter(expression)
        except QueryError:
            continue
        pred(ADA)
        pred({})


def test_tokens_as_graph_documents() -> None:
    """displayName tokens: spaces, lower-to-upper changes, digits, symbols, and words joined by symbols."""
    assert {"hello", "world"} <= search_tokens("HelloWorld")
    assert "helloworld" in search_tokens("HELLOworld") and "hello" not in search_tokens("HELLOworld")
    assert {"hello", "123", "world"} <= search_tokens("hello123world")
    assert {"hello", "world", "helloworld"} <= search_tokens("hello-world")


@pytest.mark.parametrize(
    ("search", "matches"),
    [
        ('"displayName:lovelace"', True),  # a word inside displayName
        ('"displayName:byron ada"', True),  # every word, in any order
        ('"displayName:lovelacebyron"', True),  # words joined only by a symbol
        ('"displayName:lace"', False),  # words match from their start only
        ('"mail:ada.love"', True),  # other properties: the start of the whole value
        ('"mail:lovelace"', False),  # not a word inside it
        ('"department:res" AND ("mail:x" OR "displayName:ada")', True),
        ('"displayName:\\"ada\\""', True),  # an escaped quote inside a clause
        ('"displayName:grace" OR "mail:grace"', False),
    ],
)
def test_search_tokenizes_display_name_only(search: str, matches: bool) -> None:
    """$search splits words only in displayName; other properties match from the start of the value."""
    assert parse_search(search)(ADA) is matches


@pytest.mark.parametrize(
    "search", ["ada", '"displayName:ada" AND', '("displayName:ada"', '"nosuch:ada"', '"accountEnabled:true"']
)
def test_malformed_search_is_refused(search: str) -> None:
    """A search that is not quoted property clauses is Graph's 400."""
    with pytest.raises(QueryError):
        parse_search(search)


def test_ids_match_whatever_their_case(tenant: Tenant) -> None:
    """An object id is a GUID: upper case finds the same user, as in Graph."""
    uid = next(iter(tenant.directory.users))
    assert tenant.directory.find(uid.upper()) is tenant.directory.users[uid]
    assert tenant.directory.find(uid.upper().replace("-", "")) is None
