"""A farmer client on treq that signs its requests with request-bound (DATASERV-V2)
headers, or with the field clients' legacy headers when asked to.

Used by the tests, the benchmark and by hand::

    python -m dataserv.client http://127.0.0.1:5000 register|ping|height N|...
"""

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Generator, List, Optional, Protocol, Union
from urllib.parse import urlsplit

import treq
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers

from dataserv.identity.signing import FarmerKey, headers_for, v2_headers_for

# What an inlineCallbacks generator of this module yields, is sent, and returns.
_Steps = Generator["Deferred[Any]", Any, "Reply"]


class HTTPClient(Protocol):
    """The part of treq (or of a `treq.testing.StubTreq`) the client uses."""

    def get(self, url: str, headers: Any = None) -> "Deferred[Any]":
        """Send a GET request; the Deferred fires with a treq response."""

    def post(self, url: str, data: Any = None, *, headers: Any = None) -> "Deferred[Any]":
        """Send a POST request; the Deferred fires with a treq response."""

    def delete(self, url: str, *, headers: Any = None) -> "Deferred[Any]":
        """Send a DELETE request; the Deferred fires with a treq response."""


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

    def brief(self) -> str:
        """The body on one line, for a message: "an HTML page" for one, else its
        first 80 characters."""
        text = " ".join(self.text.split())
        return "an HTML page" if text.startswith("<") else text[:80]


class NoServerAddress(Exception):
    """The server did not say its address (GET /api/address): requests cannot be
    signed for it."""


def _server_address(reply: Reply) -> str:
    """The address in a reply to GET /api/address, or NoServerAddress saying what came
    instead (not a dataserv server, or one that is not answering properly)."""
    try:
        address = reply.json()["address"] if reply.status == 200 else None
    except (ValueError, TypeError, KeyError):
        address = None
    if not isinstance(address, str) or not address:
        raise NoServerAddress("GET /api/address answered %d %s; is this a dataserv server?"
                              % (reply.status, reply.brief()))
    return address


class FarmerClient:
    """Speaks every route for one farmer key; `http` is treq or a StubTreq.

    Requests are signed with DATASERV-V2 headers bound to the request; ``legacy=True``
    signs as the field clients do (Date and server address only), for testing. Once a
    farmer has used v2 the server refuses its legacy headers.
    """

    def __init__(
        self,
        url: str,
        key: FarmerKey,
        server_address: Optional[str] = None,
        http: HTTPClient = treq,
        use_nodeid: bool = False,
        legacy: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.server_address = server_address
        self.http = http
        self.farmer_id = key.nodeid if use_nodeid else key.address
        self.legacy = legacy

    def target(self, path: str) -> str:
        """The request target (path and query) that a request for ``path`` sends."""
        parts = urlsplit(self.url + path)
        return (parts.path or "/") + ("?" + parts.query if parts.query else "")

    @defer.inlineCallbacks
    def signed_headers(
        self, path: Optional[str] = None, method: str = "GET", body: bytes = b""
    ) -> Generator["Deferred[Any]", Any, Dict[bytes, bytes]]:
        """Return the Date and Authorization headers for a request to ``path``.

        The first time, it asks the server its address, as the field clients do.
        Legacy headers when the client is legacy (they do not depend on the request).
        """
        if self.server_address is None:
            reply = yield self.address()
            self.server_address = _server_address(reply)
        if self.legacy:
            return headers_for(self.key, self.server_address)
        if path is None:
            path = "/api/ping/" + self.farmer_id
        return v2_headers_for(self.key, self.server_address, method, self.target(path),
                              body)

    @defer.inlineCallbacks
    def headers(self, path: Optional[str] = None) -> _Steps:
        """Return signed headers for one GET of ``path`` (default: this farmer's
        ping) as curl arguments in a Reply (for the command line). A v2 pair is
        good once."""
        signed = yield self.signed_headers(path)
        text = " ".join("-H '%s: %s'" % (name.decode(), value.decode())
                        for name, value in sorted(signed.items(), reverse=True))
        return Reply(200, None, text.encode())

    @defer.inlineCallbacks
    def _get(
        self, path: str, signed: bool, headers: Optional[Dict[bytes, bytes]] = None
    ) -> _Steps:
        all_headers = dict(headers or {})
        if signed:
            all_headers.update((yield self.signed_headers(path)))
        response = yield self.http.get(self.url + path, headers=all_headers)
        body = yield response.content()
        return Reply(response.code, response.headers, body)

    @defer.inlineCallbacks
    def _post(self, path: str, value: Any) -> _Steps:
        """A signed POST of ``value`` as a JSON body (v2 signs the body's SHA-256)."""
        body = json.dumps(value).encode("utf-8")
        headers = dict((yield self.signed_headers(path, "POST", body)))
        headers[b"Content-Type"] = b"application/json"
        response = yield self.http.post(self.url + path, data=body, headers=headers)
        content = yield response.content()
        return Reply(response.code, response.headers, content)

    def register_plot(self, seed: bytes, k: int) -> "Deferred[Reply]":
        """POST /api/proofs/<nodeid>/plots: register the plot ``seed`` (bytes) of size k."""
        return self._post("/api/proofs/%s/plots" % self.key.nodeid,
                          {"seed": seed.hex(), "k": k})

    @defer.inlineCallbacks
    def remove_plot(self, plot: str) -> _Steps:
        """DELETE /api/proofs/<nodeid>/plots/<plot id>: stop farming a plot. ``plot``
        is its id (64 hex digits) or the path of its file (``dataserv-k<k>-<seed>.plot``,
        whose id is worked out from the name and this farmer's nodeid)."""
        from dataserv.client.plotting import parse_plot_name
        from dataserv.proofs.plots import plot_id

        try:
            raw = bytes.fromhex(plot)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            _, seed = parse_plot_name(os.path.basename(plot))
            raw = plot_id(bytes.fromhex(self.key.nodeid), seed)
        path = "/api/proofs/%s/plots/%s" % (self.key.nodeid, raw.hex())
        headers = yield self.signed_headers(path, "DELETE")
        response = yield self.http.delete(self.url + path, headers=headers)
        body = yield response.content()
        return Reply(response.code, response.headers, body)

    def challenges(self) -> "Deferred[Reply]":
        """GET /api/proofs/<nodeid>/challenges (signed; starts each one's window)."""
        return self._get("/api/proofs/%s/challenges" % self.key.nodeid, signed=True)

    def answers(self, answers: List[Dict[str, Any]]) -> "Deferred[Reply]":
        """POST /api/proofs/<nodeid>/answers with [{"plot_id", "challenge", "proofs"}]."""
        return self._post("/api/proofs/%s/answers" % self.key.nodeid, {"answers": answers})

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
