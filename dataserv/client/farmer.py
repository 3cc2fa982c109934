"""A farmer client on treq that signs its requests like the clients in the field.

Used by the tests, the benchmark and by hand::

    python -m dataserv.client http://127.0.0.1:5000 register|ping|height N|...
"""

import json
from dataclasses import dataclass
from typing import Any, Dict, Generator, Optional, Protocol, Union

import treq
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers

from dataserv.identity.signing import FarmerKey, headers_for

# What an inlineCallbacks generator of this module yields, is sent, and returns.
_Steps = Generator["Deferred[Any]", Any, "Reply"]


class HTTPClient(Protocol):
    """The part of treq (or of a `treq.testing.StubTreq`) the client uses."""

    def get(self, url: str, headers: Any = None) -> "Deferred[Any]":
        """Send a GET request; the Deferred fires with a treq response."""


@dataclass(frozen=True)
class Reply:
    """Status code, headers and body of one answer."""

    status: int
    headers: Optional[Headers]
    body: bytes

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


class FarmerClient:
    """Speaks every route for one farmer key; `http` is treq or a StubTreq."""

    def __init__(
        self,
        url: str,
        key: FarmerKey,
        server_address: Optional[str] = None,
        http: HTTPClient = treq,
        use_nodeid: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.server_address = server_address
        self.http = http
        self.farmer_id = key.nodeid if use_nodeid else key.address

    @defer.inlineCallbacks
    def signed_headers(self) -> Generator["Deferred[Any]", Any, Dict[bytes, bytes]]:
        """Return the Date and Authorization headers for the next request.

        The first time, it asks the server its address, as the field clients do.
        """
        if self.server_address is None:
            reply = yield self.address()
            self.server_address = reply.json()["address"]
        return headers_for(self.key, self.server_address)

    @defer.inlineCallbacks
    def headers(self) -> _Steps:
        """Return the signed headers as curl arguments in a Reply (for the command line)."""
        signed = yield self.signed_headers()
        text = " ".join("-H '%s: %s'" % (name.decode(), value.decode())
                        for name, value in sorted(signed.items(), reverse=True))
        return Reply(200, None, text.encode())

    @defer.inlineCallbacks
    def _get(
        self, path: str, signed: bool, headers: Optional[Dict[bytes, bytes]] = None
    ) -> _Steps:
        all_headers = dict(headers or {})
        if signed:
            all_headers.update((yield self.signed_headers()))
        response = yield self.http.get(self.url + path, headers=all_headers)
        body = yield response.content()
        return Reply(response.code, response.headers, body)

    def address(self) -> "Deferred[Reply]":
        """GET /api/address (unsigned, as the field clients do first)."""
        return self._get("/api/address", signed=False)

    def register(self, payout: Optional[str] = None) -> "Deferred[Reply]":
        """GET /api/register/<id>[/<payout>]."""
        path = "/api/register/" + self.farmer_id
        if payout:
            path += "/" + payout
        return self._get(path, signed=True)

    def ping(self) -> "Deferred[Reply]":
        """GET /api/ping/<id>."""
        return self._get("/api/ping/" + self.farmer_id, signed=True)

    def height(self, height: Union[int, str]) -> "Deferred[Reply]":
        """GET /api/height/<id>/<height>."""
        return self._get("/api/height/%s/%s" % (self.farmer_id, height), signed=True)

    def bandwidth(
        self, upload: Union[int, str], download: Union[int, str]
    ) -> "Deferred[Reply]":
        """GET /api/bandwidth/<id>/<upload>/<download>."""
        return self._get("/api/bandwidth/%s/%s/%s" % (self.farmer_id, upload, download),
                         signed=True)

    def audit(self, block: Union[int, str], response: str) -> "Deferred[Reply]":
        """GET /api/audit/<id>/<block>/<sha256 hex>."""
        return self._get("/api/audit/%s/%s/%s" % (self.farmer_id, block, response), signed=True)

    def status(self) -> "Deferred[Reply]":
        """GET /api/farmer/<id> (public)."""
        return self._get("/api/farmer/" + self.farmer_id, signed=False)

    def online(self) -> "Deferred[Reply]":
        """GET /api/online."""
        return self._get("/api/online", signed=False)

    def online_json(self, gzip: bool = False) -> "Deferred[Reply]":
        """GET /api/online/json."""
        headers = {b"Accept-Encoding": b"gzip"} if gzip else None
        return self._get("/api/online/json", signed=False, headers=headers)

    def total(self) -> "Deferred[Reply]":
        """GET /api/total."""
        return self._get("/api/total", signed=False)

    def history(
        self, since: Union[int, str, None] = None, until: Union[int, str, None] = None
    ) -> "Deferred[Reply]":
        """GET /api/total/history."""
        query = "&".join("%s=%s" % (k, v) for k, v in (("since", since), ("until", until))
                         if v is not None)
        return self._get("/api/total/history" + ("?" + query if query else ""), signed=False)
