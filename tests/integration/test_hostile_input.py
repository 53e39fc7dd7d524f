"""Hostile input, property-based: any query, path or body gets 200/202, 400 or 404 JSON; never 500, never a secret."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import Emulator

NAMES = ["top", "select", "filter", "search", "count", "cursor", "code", "$top", "id", ""]
# Bytes that are not UTF-8 arrive as lone surrogates (surrogateescape), as the worker decodes them.
raw_text = st.binary(max_size=64).map(lambda b: b.decode("utf-8", "surrogateescape"))
values = st.one_of(
    st.text(max_size=40),
    raw_text,
    st.sampled_from(["0", "1", "999", "1000", "-1", "true", "false", "TRUE", "id,displayName", "id,,x",
                     '"displayName:ada"', "startswith(displayName,'A')", "accountEnabled eq true",
                     "displayName gt 'a'", "dXNlcnM_JHRvcD0x", "QGF0dGFja2VyLmV4YW1wbGU", "%00", "\x00", "\r\n"]),
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.text(min_size=3000, max_size=9000, alphabet="ab%'\"(),:"),
)
params = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=12), raw_text), values, max_size=4)
route_ids = st.one_of(st.text(max_size=80), raw_text, st.sampled_from(["", "..", "a/b", "x" * 300, "%2F", "me"]),
                      st.uuids().map(str))
requests_ = st.tuples(
    st.sampled_from(["list_users", "get_user", "request_sync", "sync_status", "health"]),
    params, route_ids, st.binary(max_size=256), st.sampled_from(["GET", "POST", "PUT"]),
)


class _Out:
    def __init__(self) -> None:
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(request=requests_)
def test_any_input_is_answered_cleanly(emu: Emulator, storage: str, triggers: dict[str, Any],
                                       request: tuple[str, dict[str, str], str, bytes, str]) -> None:
    """Whatever arrives, the answer is 200/202/400/404 JSON in the API's shapes, and carries no secret or token."""
    name, query, route_id, body, method = request
    req = func.HttpRequest(method=method, url=f"http://localhost/api/{name}", params=query,
                           route_params={"id": route_id} if name == "get_user" else {}, body=body, headers={})
    resp = triggers[name](req, _Out()) if name == "request_sync" else triggers[name](req)
    assert resp.status_code in (200, 202, 400, 404), (resp.status_code, resp.get_body()[:300])
    payload = json.loads(resp.get_body())
    if resp.status_code >= 400:
        assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}
        assert payload["error"]["code"] in ("invalid_request", "not_found")
    text = resp.get_body().decode() + json.dumps(dict(resp.headers))
    for secret in [emu.secret, *emu.issued]:
        assert secret not in text
