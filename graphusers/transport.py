"""The Graph session's transport: requests' adapter, reading each response body in one call.

requests reads a body that is not streamed in 10 KB pieces (``Response.iter_content``),
each through several layers of urllib3 and http.client: a page of 999 users is about
twenty such rounds, a tenth of the listing's CPU (bench/README.md). This adapter reads
the body whole, once, as soon as the headers are in, and raises the same exceptions
requests would raise while reading it, so that retries behave exactly as before.
"""

from __future__ import annotations

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
