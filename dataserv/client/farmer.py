"""A farmer client on treq that signs its requests like the clients in the field.

Used by the tests, the benchmark and by hand::

    python -m dataserv.client http://127.0.0.1:5000 register|ping|height N|...
"""

import json
from dataclasses import dataclass

import treq
from twisted.internet import defer

from dataserv.identity.signing import FarmerKey, headers_for


@dataclass(frozen=True)
class Reply:
    """Status code, headers and body of one answer."""

    status: int
    headers: object
    body: bytes

    @property
    def text(self):
        """The body as text."""
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The body parsed as JSON."""
        return json.loads(self.body)


class FarmerClient:
    """Speaks every route for one farmer key. ``http`` is treq or a StubTreq."""

    def __init__(self, url, key, server_address=None, http=treq, use_nodeid=False):
        self.url = url.rstrip("/")
        self.key = key
        self.server_address = server_address
        self.http = http
        self.farmer_id = key.nodeid if use_nodeid else key.address

    @defer.inlineCallbacks
    def signed_headers(self):
        """Date and Authorization for the next request (asks the server its address
        the first time, as the field clients do)."""
        if self.server_address is None:
            reply = yield self.address()
            self.server_address = reply.json()["address"]
        return headers_for(self.key, self.server_address)

    @defer.inlineCallbacks
    def headers(self):
        """The signed headers as curl arguments, in a Reply (for the command line)."""
        signed = yield self.signed_headers()
        text = " ".join("-H '%s: %s'" % (name.decode(), value.decode())
                        for name, value in sorted(signed.items(), reverse=True))
        return Reply(200, None, text.encode())

    @defer.inlineCallbacks
    def _get(self, path, signed, headers=None):
        all_headers = dict(headers or {})
        if signed:
            all_headers.update((yield self.signed_headers()))
        response = yield self.http.get(self.url + path, headers=all_headers)
        body = yield response.content()
        return Reply(response.code, response.headers, body)

    @defer.inlineCallbacks
    def _post(self, path, value):
        """A signed POST of ``value`` as a JSON body."""
        body = json.dumps(value).encode("utf-8")
        headers = dict((yield self.signed_headers()))
        headers[b"Content-Type"] = b"application/json"
        response = yield self.http.post(self.url + path, data=body, headers=headers)
        content = yield response.content()
        return Reply(response.code, response.headers, content)

    def register_plot(self, seed, k):
        """POST /api/proofs/<nodeid>/plots: register the plot ``seed`` (bytes) of size k."""
        return self._post("/api/proofs/%s/plots" % self.key.nodeid,
                          {"seed": seed.hex(), "k": k})

    def challenges(self):
        """GET /api/proofs/<nodeid>/challenges (signed; starts each one's window)."""
        return self._get("/api/proofs/%s/challenges" % self.key.nodeid, signed=True)

    def answers(self, answers):
        """POST /api/proofs/<nodeid>/answers with [{"plot_id", "challenge", "proofs"}]."""
        return self._post("/api/proofs/%s/answers" % self.key.nodeid, {"answers": answers})

    def address(self):
        """GET /api/address (unsigned, as the field clients do first)."""
        return self._get("/api/address", signed=False)

    def register(self, payout=None):
        """GET /api/register/<id>[/<payout>]."""
        path = "/api/register/" + self.farmer_id
        if payout:
            path += "/" + payout
        return self._get(path, signed=True)

    def ping(self):
        """GET /api/ping/<id>."""
        return self._get("/api/ping/" + self.farmer_id, signed=True)

    def height(self, height):
        """GET /api/height/<id>/<height>."""
        return self._get("/api/height/%s/%s" % (self.farmer_id, height), signed=True)

    def bandwidth(self, upload, download):
        """GET /api/bandwidth/<id>/<upload>/<download>."""
        return self._get("/api/bandwidth/%s/%s/%s" % (self.farmer_id, upload, download),
                         signed=True)

    def audit(self, block, response):
        """GET /api/audit/<id>/<block>/<sha256 hex>."""
        return self._get("/api/audit/%s/%s/%s" % (self.farmer_id, block, response), signed=True)

    def status(self):
        """GET /api/farmer/<id> (public)."""
        return self._get("/api/farmer/" + self.farmer_id, signed=False)

    def online(self):
        """GET /api/online."""
        return self._get("/api/online", signed=False)

    def online_json(self, gzip=False):
        """GET /api/online/json."""
        headers = {b"Accept-Encoding": b"gzip"} if gzip else None
        return self._get("/api/online/json", signed=False, headers=headers)

    def total(self):
        """GET /api/total."""
        return self._get("/api/total", signed=False)

    def history(self, since=None, until=None):
        """GET /api/total/history."""
        query = "&".join("%s=%s" % (k, v) for k, v in (("since", since), ("until", until))
                         if v is not None)
        return self._get("/api/total/history" + ("?" + query if query else ""), signed=False)
