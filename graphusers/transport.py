"""The Graph session's transport: requests' adapter, reading each response body in one call.

requests reads a body that is not streamed in 10 KB pieces (``Response.iter_content``),
each through several layers of urllib3 and http.client: a page of 999 users is about
twenty such rounds, a tenth of the listing's CPU (bench/README.md). This adapter reads
the body whole, once, as soon as the headers are in, and raises the same exceptions
requests would raise while reading it, so that retries behave exactly as before.
"""

from __future__ import annotations

import os
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError


class WholeBodyAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose responses arrive with their body already read."""

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = super().build_response(req, resp)
        # The exceptions requests.models.Response.iter_content raises for the same failures.
        try:
            body = resp.read(decode_content=True)
        except ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from exc
        except DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from exc
        except ReadTimeoutError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except SSLError as exc:
            raise requests.exceptions.SSLError(exc) from exc
        # What Response.content sets once it has read the body; Session.send then reads no more.
        response._content = body or b""
        response._content_consumed = True  # type: ignore[attr-defined]
        return response


def graph_session(endpoint: str) -> requests.Session:
    """A session for one Graph endpoint: bodies read whole, and the environment read once, here.

    With ``trust_env`` on, requests reads the proxy variables (every environment variable,
    twice) and looks for a ``.netrc`` on every request. Every request of this session goes
    to ``endpoint``, so the same answers are worked out once: its proxies (``HTTPS_PROXY``,
    ``NO_PROXY``) and the CA bundle requests would take from ``REQUESTS_CA_BUNDLE`` or
    ``CURL_CA_BUNDLE``. The ``Authorization`` header is always the app's token, never a ``.netrc``'s.
    """
    session = requests.Session()
    for prefix in ("https://", "http://"):
        session.mount(prefix, WholeBodyAdapter())
    session.proxies = requests.utils.get_environ_proxies(endpoint)
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.trust_env = False
    return session
