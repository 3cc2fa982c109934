"""The HTTP API: a Klein app as a class, with one table from rejections to responses."""

import ipaddress
import json
import re
from typing import Any, Dict, Optional, Tuple

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource as web_resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect

from dataserv import __version__
from dataserv.identity import v2
from dataserv.proofs import rules as proof_rules
from dataserv.registry import farmers as rules
from dataserv.web import limits
from dataserv.web.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics
from dataserv.web import render
from dataserv.registry.uptime import uptime_percent
from dataserv.web.body import Body
from dataserv.web import openapi
from dataserv.web.static_files import StaticFiles
from dataserv.web.proofs_api import ProofsAPI

TEXT = b"text/html; charset=utf-8"  # what 2.2.x (Flask) sent for its plain answers
PLAIN = b"text/plain; charset=utf-8"  # the routes beyond 2.2.x
JSON = b"application/json"
PLAIN = b"text/plain; charset=utf-8"  # every error that is not one of the contract's
RETRY_AFTER = b"5"
SERVER = ("dataserv/%s" % (__version__,)).encode()

# (route, rejection) -> (status, body). Bodies are the contract's, byte for byte.
_REGISTER = "Registration Failed: Invalid Bitcoin address."
ERRORS: Dict[Tuple[str, type], Tuple[Any, ...]] = {
    ("register", rules.InvalidFarmerId): (400, _REGISTER),
    ("register", rules.Unauthenticated): (401, "Registration Failed: Invalid authentication headers."),
    ("register", rules.InvalidPayout): (400, _REGISTER),
    ("register", rules.AlreadyRegistered): (409, "Registration Failed: Address already is registered."),
    ("register", rules.TooManyRegistrations): (
        429, "Too many registrations from your network: try again in {retry_after} s."),
    ("ping", rules.InvalidFarmerId): (400, "Ping Failed: Invalid Bitcoin address."),
    ("ping", rules.Unauthenticated): (401, "Ping Failed: Invalid authentication headers."),
    ("ping", rules.FarmerNotFound): (404, "Ping Failed: Farmer not found."),
    ("height", rules.InvalidHeight): (400, "Invalid height."),
    ("height", rules.InvalidFarmerId): (400, "Invalid Bitcoin address."),
    ("height", rules.Unauthenticated): (401, "Set height failed: Invalid authentication headers."),
    ("height", rules.HeightLimitExceeded): (413, "Height limit exceeded."),
    ("height", rules.FarmerNotFound): (404, "Farmer not found."),
    ("bandwidth", rules.InvalidFarmerId): (400, "Invalid nodeid."),
    ("bandwidth", rules.InvalidBandwidth): (400, "Invalid bandwidth."),
    ("bandwidth", rules.Unauthenticated): (401, "Set bandwidth failed: Invalid authentication headers."),
    ("bandwidth", rules.FarmerNotFound): (404, "Farmer not found."),
    ("bandwidth", rules.TooManyBandwidthReports): (
        429, "Too many bandwidth reports: try again in {retry_after} s."),
    ("audit", rules.InvalidFarmerId): (400, "Invalid nodeid."),
    ("audit", rules.InvalidBlock): (400, "Invalid block."),
    ("audit", rules.InvalidResponse): (400, "Invalid response."),
    ("audit", rules.Unauthenticated): (401, "Audit failed: Invalid authentication headers."),
    ("audit", rules.FarmerNotFound): (404, "Farmer not found."),
    ("audit", rules.DuplicateAudit): (409, "Duplicate audit: Block {block}"),
    ("audit", rules.TooManyAudits): (429, "Too many audits: try again in {retry_after} s."),
    ("farmer", rules.InvalidFarmerId): (400, "Invalid nodeid."),
    ("farmer", rules.FarmerNotFound): (404, "Farmer not found."),
}
# The proof-of-space routes (web/proofs_api.py): text/plain, the third element.
_BAD_K = "Invalid k: plots from k={smallest} to k={largest} are accepted."
for _route in ("plot", "remove_plot", "challenges", "answers"):
    ERRORS.update({
        (_route, rules.InvalidFarmerId): (400, "Invalid nodeid.", PLAIN),
        (_route, rules.Unauthenticated): (401, "Invalid authentication headers.", PLAIN),
        (_route, rules.FarmerNotFound): (404, "Farmer not found.", PLAIN),
        (_route, proof_rules.BodyTooLarge): (
            413, "Body too large: at most %d bytes." % proof_rules.MAX_BODY, PLAIN),
        (_route, proof_rules.InvalidProofRequest): (400, "{reason}", PLAIN),
    })
ERRORS.update({
    ("plot", proof_rules.KOutOfRange): (400, _BAD_K, PLAIN),
    ("plot", proof_rules.PlotConflict): (409, "Plot already registered with another k.", PLAIN),
    ("plot", proof_rules.TooManyPlots): (
        403, "Too many plots: at most {limit} per farmer; remove one first.", PLAIN),
    ("remove_plot", proof_rules.UnknownPlot): (404, "Unknown plot.", PLAIN),
    ("answers", proof_rules.UnknownPlot): (404, "Unknown plot.", PLAIN),
    ("answers", proof_rules.UnknownChallenge): (404, "Unknown challenge.", PLAIN),
})
UNAVAILABLE = (503, "Service unavailable: the database cannot be reached. Try again later.")
NOT_SUMMARISED = (503, "Service unavailable: the online list is being built. Try again shortly.")
TOO_MANY = (429, "Too many requests: slow down.")
METHOD_NOT_ALLOWED = (405, "405 Method Not Allowed")
METRICS_FORBIDDEN = (403, "Forbidden: /metrics is not open to this address.")
INTERNAL_ERROR = (500, "Internal server error.")
MAX_HISTORY_POINTS = 1000
HISTORY_DEFAULT_SPAN = 7 * 86400  # seconds of history when ?since= is not given


# /api/ping/<id> answered without Klein (see _Guarded): a GET whose <id> is plain
# letters and digits (every address and nodeid is), so that routing it needs no
# decoding and matches exactly what the Klein route would.
_PING_PATH = b"/api/ping/"
_PLAIN_SEGMENT = re.compile(rb"[A-Za-z0-9]{1,64}")


def _query_number(request: Any, name: Any, default: Any) -> Any:
    values = request.args.get(name)
    if not values or values[0] == b"":
        return default
    try:
        value = float(values[0])
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("Invalid %s: expected Unix seconds." % name.decode())
    return value


def _header(request: Any, name: Any) -> Any:
    return request.requestHeaders.getRawHeaders(name, [None])[0]


class API:
    """Routes as methods; collaborators come in through the constructor."""

    app = Klein()
    log = Logger()

    def __init__(self, farmers: Any, summariser: Any, database: Any, settings: Any, clock: Any,
                 metrics: Optional[Metrics] = None, proofs: Any = None) -> None:
        self.farmers = farmers
        self.proofs = proofs
        self.proofs_api = ProofsAPI(self, proofs) if proofs is not None else None
        self.summariser = summariser
        self.database = database
        self.settings = settings
        self.clock = clock
        if metrics is None:
            metrics = Metrics()
        metrics.watch(farmers, summariser, database, clock)
        self.metrics = metrics
        self.static = StaticFiles()
        self._openapi = openapi.document_bytes()
        self._trusted = settings.trusted_proxies
        self.rate_limiter = None
        if settings.rate_limit and not settings.no_limits:
            self.rate_limiter = limits.RateLimiter(settings.rate_limit, settings.rate_burst)

    def resource(self) -> Any:
        """The twisted.web resource for this API: the limits, then the routes."""
        return _Guarded(self, self.app.resource())

    def refusal(self, request: Any) -> Optional[bytes]:
        """The answer for a request refused before any work (rate limit), or None."""
        if self.rate_limiter is None:
            return None
        key = limits.client_key(self.client_ip(request))
        if key is None:
            return None
        wait = self.rate_limiter.take(key, self.clock.seconds())
        if not wait:
            return None
        self.metrics.refused("rate")
        request.setHeader(b"Retry-After", limits.retry_after(wait))
        return self._text(request, *TOO_MANY, PLAIN)

    # -- helpers -------------------------------------------------------------

    def client_ip(self, request: Any) -> Any:
        """The client's IP: the peer, or X-Forwarded-For's last hop when the peer is a
        trusted proxy."""
        peer = getattr(request.getClientAddress(), "host", None)
        if peer and self._trusted:
            forwarded = _header(request, b"X-Forwarded-For")
            try:
                peer_ip = ipaddress.ip_address(peer)
            except ValueError:
                return peer
            if forwarded and any(peer_ip in net for net in self._trusted):
                hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
                # Walk back from our proxy: the first hop that is not trusted is the client.
                for hop in reversed(hops):
                    try:
                        hop_ip = ipaddress.ip_address(hop)
                    except ValueError:
                        break
                    peer = hop
                    if not any(hop_ip in net for net in self._trusted):
                        break
        return peer

    def _rules_request(self, request: Any, now: Any) -> Any:
        authorization = _header(request, b"Authorization")
        body = b""
        if v2.is_v2(authorization) and request.content is not None:
            # Only a v2 signature covers the body; legacy requests never read it.
            request.content.seek(0)
            body = request.content.read()
        return rules.Request(
            date=_header(request, b"Date"),
            authorization=authorization,
            now=now,
            ip=self.client_ip(request),
            method=request.method.decode("latin-1"),
            target=request.uri.decode("latin-1"),
            body=body,
        )

    def _text(self, request: Any, status: Any, body: Any, content_type: Any = TEXT) -> Any:
        """Status, type and length of an answer; its body (str, bytes or a Body)."""
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type)
        if isinstance(body, str):
            body = body.encode("utf-8")
        # A length, as 2.2.x sent, rather than Twisted's chunked encoding.
        request.setHeader(b"Content-Length", b"%d" % len(body))
        if isinstance(body, Body):
            return body.write_to(request)  # Klein finishes the request after it
        return body

    def _answer(self, route: Any, request: Any, d: Any, success: Any) -> Any:
        """Attach the success renderer and the one error table to a rules Deferred."""

        def failed(failure: Any) -> Any:
            error = failure.value
            if isinstance(error, rules.Unavailable):
                if error.database_outage:
                    self.metrics.database_error(getattr(error, "kind", "unavailable"))
                request.setHeader(b"Retry-After", RETRY_AFTER)
                return self._text(request, UNAVAILABLE[0],
                                  getattr(error, "text", UNAVAILABLE[1]), PLAIN)
            for kind in type(error).__mro__:
                entry = ERRORS.get((route, kind))
                if entry is not None:
                    status, body = entry[:2]
                    if isinstance(error, rules.Unauthenticated):
                        # The contract's body stays; the reason is one line beside it.
                        request.setHeader(b"X-Auth-Error", error.reason.encode("ascii"))
                        if error.skew is not None:
                            request.setHeader(b"X-Clock-Skew", str(int(error.skew)).encode())
                    if isinstance(error, rules.DuplicateAudit):
                        body = body.format(block=error.block)
                    if isinstance(error, proof_rules.InvalidProofRequest):
                        body = body.format(reason=error.reason)
                    if isinstance(error, proof_rules.KOutOfRange):
                        body = body.format(smallest=error.smallest, largest=error.largest)
                    if isinstance(error, proof_rules.TooManyPlots):
                        body = body.format(limit=error.limit)
                        self.metrics.refused("max_plots")
                    if isinstance(error, rules.TooMany):
                        self.metrics.refused(route)  # audit, bandwidth or register
                        request.setHeader(b"Retry-After", b"%d" % error.retry_after)
                        return self._text(request, status,
                                          body.format(retry_after=error.retry_after), PLAIN)
                    return self._text(request, status, body, *entry[2:])
            return failure

        return d.addCallbacks(success, failed)

    def _changes_nothing(self, request: Any) -> Any:
        """405 for HEAD on a route that changes state (werkzeug answers HEAD for every
        GET route); None for any other method."""
        if request.method != b"HEAD":
            return None
        request.setHeader(b"Allow", b"GET")
        return self._text(request, *METHOD_NOT_ALLOWED, PLAIN)

    @app.handle_errors(HTTPException)
    def _http_error(self, request: Any, failure: Any) -> Any:
        """Routing errors (404, 405, ...) as short text instead of werkzeug's HTML."""
        error = failure.value
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            request.setHeader(b"Allow", ", ".join(error.valid_methods).encode())
        if isinstance(error, RequestRedirect):  # e.g. // merged into /
            request.setHeader(b"Location", error.new_url.encode("utf-8"))
        return self._text(request, error.code, "%d %s" % (error.code, error.name), PLAIN)

    @app.handle_errors(Exception)
    def _unexpected(self, request: Any, failure: Any) -> Any:
        """A bug: logged with its traceback, answered with one line."""
        self.log.failure("unexpected error in {uri}", failure, uri=request.uri)
        return self._text(request, *INTERNAL_ERROR, PLAIN)

    # -- legacy routes -------------------------------------------------------

    @app.route("/api/address", methods=["GET"])
    def address(self, request: Any) -> Any:
        """The server's own address, for clients to sign for."""
        return self._text(request, 200, render.json_bytes({"address": self.settings.address}), JSON)

    @app.route("/api/register/<farmer_id>", methods=["GET"])
    @app.route("/api/register/<farmer_id>/<payout>", methods=["GET"])
    def register(self, request: Any, farmer_id: Any, payout: Any = None) -> Any:
        """Register a farmer, optionally with a payout address."""
        refused = self._changes_nothing(request)
        if refused is not None:
            return refused
        now = self.clock.seconds()
        d = defer.maybeDeferred(
            self.farmers.register, farmer_id, payout, self._rules_request(request, now))
        return self._answer("register", request, d, lambda record: self._text(
            request, 200, render.json_bytes(render.farmer_dict(record, now, uptime_percent(
                0.0, record, now, self.settings.online_seconds, self.settings.uptime_days))),
            JSON))

    def _accept(self, route: Any, request: Any, call: Any, *args: Any, accepted: Any) -> Any:
        """A signed call that answers 200 with the text ``accepted``; "now" is read here,
        once, at request entry."""
        if request.method == b"HEAD":
            return self._changes_nothing(request)
        rules_request = self._rules_request(request, self.clock.seconds())
        d = defer.maybeDeferred(call, *args, rules_request)  # type: ignore[call-overload]
        return self._answer(route, request, d, lambda _: self._text(request, 200, accepted))

    @app.route("/api/ping/<farmer_id>", methods=["GET"])
    def ping(self, request: Any, farmer_id: Any) -> Any:
        """Keep-alive."""
        return self._accept("ping", request, self.farmers.ping, farmer_id,
                            accepted="Ping accepted.")

    def render_ping(self, request: Any, farmer_id: str) -> Any:
        """GET /api/ping/<farmer_id> as the Klein route answers it, without Klein.

        Pings are most of the traffic, and Klein's part of one (binding a URL map,
        matching, two notifyFinish Deferreds, its result processing) was a fifth of
        its Python work, more than the defences added to it. This does what Klein
        does for this one
        route: the route method's answer is written and the request finished; a
        failure the route does not answer goes to the same handler (a 500); a client
        that goes away before the answer cancels it, and nothing is written then.
        """
        gone = [False]  # the request finished or its connection was lost
        d = defer.maybeDeferred(self.ping, request, farmer_id)

        def failed(failure: Failure) -> Any:
            if gone[0]:
                if not failure.check(defer.CancelledError):
                    self.log.failure("unhandled error after {uri} was finished", failure,
                                     uri=request.uri)
                return None
            return self._unexpected(request, failure)

        def write(body: Any) -> None:
            if isinstance(body, bytes):
                request.write(body)
            if not gone[0]:
                request.finish()

        d.addCallbacks(write, lambda failure: write(failed(failure)))
        d.addErrback(lambda failure: self.log.failure(
            "unhandled error writing the answer to {uri}", failure, uri=request.uri))
        if not request.finished:  # the answer is still to come: the client may go first
            def finished(result: Any) -> None:
                gone[0] = True
                if isinstance(result, Failure):
                    d.cancel()

            request.notifyFinish().addBoth(finished)
        return NOT_DONE_YET

    @app.route("/api/height/<farmer_id>/<height>", methods=["GET"])
    def height(self, request: Any, farmer_id: Any, height: Any) -> Any:
        """Advertise storage generated."""
        return self._accept("height", request, self.farmers.set_height, farmer_id, height,
                            accepted="Height accepted.")

    @app.route("/api/online", methods=["GET"])
    def online(self, request: Any) -> Any:
        """Online farmers as 2.2.x's HTML fragment."""
        snap = self.summariser.snapshot
        if snap is None:
            return self._not_summarised(request)
        return self._text(request, 200, snap.online_html)

    @app.route("/api/online/json", methods=["GET"])
    def online_json(self, request: Any) -> Any:
        """Online farmers as JSON (gzip when the client accepts it)."""
        snap = self.summariser.snapshot
        if snap is None:
            return self._not_summarised(request)
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        request.setHeader(b"Vary", b"Accept-Encoding")
        accept = _header(request, b"Accept-Encoding") or b""
        if b"gzip" in accept.lower():
            request.setHeader(b"Content-Encoding", b"gzip")
            return self._text(request, 200, snap.online_json_gzip, JSON)
        return self._text(request, 200, snap.online_json, JSON)

    @app.route("/api/total", methods=["GET"])
    def total(self, request: Any) -> Any:
        """Online count and terabytes managed."""
        snap = self.summariser.snapshot
        if snap is None:
            return self._not_summarised(request)
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        return self._text(request, 200, snap.total_json, JSON)

    def _not_summarised(self, request: Any) -> Any:
        request.setHeader(b"Retry-After", RETRY_AFTER)
        return self._text(request, *NOT_SUMMARISED, PLAIN)

    # -- beyond the legacy API ----------------------------------------------

    @app.route("/api/bandwidth/<farmer_id>/<upload>/<download>", methods=["GET"])
    def bandwidth(self, request: Any, farmer_id: Any, upload: Any, download: Any) -> Any:
        """Report upload/download bandwidth."""
        return self._accept("bandwidth", request, self.farmers.set_bandwidth, farmer_id,
                            upload, download, accepted="Bandwidth accepted.")

    @app.route("/api/audit/<farmer_id>/<block>/<response>", methods=["GET"])
    def audit(self, request: Any, farmer_id: Any, block: Any, response: Any) -> Any:
        """Submit an audit response (a SHA-256) for a block."""
        return self._accept("audit", request, self.farmers.audit, farmer_id, block, response,
                            accepted="Audit accepted.")

    @app.route("/api/farmer/<farmer_id>", methods=["GET"])
    def farmer(self, request: Any, farmer_id: Any) -> Any:
        """Self-service status: the farmer JSON plus online state and audits."""
        now = self.clock.seconds()
        d = defer.maybeDeferred(self.farmers.status, farmer_id, now)

        def found(status: Any) -> Any:
            body = render.farmer_dict(status.record, now, status.uptime)
            online_until = status.record.last_seen + self.settings.online_seconds
            body.update({
                "online": now <= online_until,  # as the online list: seen within the window
                "online_until": int(online_until),
                "audits": status.audits,
                "last_audit_block": status.last_audit_block,
            })
            if self.proofs is None:
                return body
            scores = self.proofs.plot_scores(status.record.id, now)
            return scores.addCallback(lambda tallies: dict(body, plot_scores=[
                proof_rules.plot_score_dict(t) for t in tallies]))

        def send(body: Any) -> Any:
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
            return self._text(request, 200, render.json_bytes(body), JSON)

        d.addCallback(found)
        return self._answer("farmer", request, d, send)

    @app.route("/api/proofs/", branch=True, methods=["GET", "POST", "DELETE"])
    def proofs_routes(self, request: Any) -> Any:
        """Proof of space: /api/proofs/<id>/plots[/<plot id>], .../challenges, .../answers."""
        if self.proofs_api is None:
            return self._text(request, 404, "Not found.", PLAIN)
        return self.proofs_api.resource()

    @app.route("/api/total/history", methods=["GET"])
    def total_history(self, request: Any) -> Any:
        """Totals over time: ?since=&until= (Unix seconds), at most 1000 points.

        until defaults to now and since to a week before until. A range that
        holds no time (since after until) holds no rows: 200 with an empty list,
        so a poller whose clock runs ahead of ours keeps working.
        """
        now = self.clock.seconds()
        try:
            until = _query_number(request, b"until", now)
            since = _query_number(request, b"since", until - HISTORY_DEFAULT_SPAN)
        except ValueError as e:
            return self._text(request, 400, str(e))
        if since > until:
            d: Any = defer.succeed([])
        else:
            d = self.farmers.history(since, until, MAX_HISTORY_POINTS)

        def rows(history: Any) -> Any:
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
            body = {"since": since, "until": until, "history": [
                {"time": int(row.at), "total_farmers": row.online_farmers,
                 "total_TB": round(row.total_tb, 2), "total_height": row.total_height,
                 "verified_TB": round(row.verified_tb, 2)}
                for row in history]}
            return self._text(request, 200, render.json_bytes(body), JSON)

        return self._answer("history", request, d, rows)

    # -- operations ----------------------------------------------------------

    @app.route("/", methods=["GET"])
    def dashboard(self, request: IRequest) -> Optional[bytes]:
        """The dashboard page (static; it reads the public routes)."""
        return self.static.serve(request, "/")

    @app.route("/favicon.ico", methods=["GET"])
    def favicon(self, request: IRequest) -> Optional[bytes]:
        """The dashboard's icon, where browsers look for it."""
        return self.static.serve(request, "/favicon.ico")

    @app.route("/static/<path:name>", methods=["GET"])
    def static_file(self, request: IRequest, name: str) -> bytes:
        """One of the dashboard's fixed set of files; anything else is 404."""
        body = self.static.serve(request, "/static/" + name)
        if body is None:
            return self._text(request, 404, "Not found.", b"text/plain; charset=utf-8")
        return body

    @app.route("/api/openapi.json", methods=["GET"])
    def openapi_document(self, request: Any) -> bytes:
        """The OpenAPI 3.1 description of every route."""
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        return self._text(request, 200, self._openapi, JSON)

    @app.route("/metrics", methods=["GET"])
    def metrics_text(self, request: IRequest) -> bytes:
        """Counters, gauges and histograms in Prometheus' text format, for the
        --metrics-allow networks only."""
        if not self._metrics_allowed(request):
            return self._text(request, *METRICS_FORBIDDEN, PLAIN)
        return self._text(request, 200, self.metrics.exposition(), METRICS_CONTENT_TYPE)

    def _metrics_allowed(self, request: Any) -> Any:
        ip = self.client_ip(request)
        try:
            address = ipaddress.ip_address(ip)
        except (TypeError, ValueError):
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.settings.metrics_allow)

    @app.route("/health", methods=["GET"])
    def health(self, request: Any) -> Any:
        """200 when the database answers a real query and takes writes, 503 with a
        one-line reason when not (within the database deadline)."""
        now = self.clock.seconds()

        def answer(result: Any) -> Any:
            ok, details = result
            snap = self.summariser.snapshot
            details = dict(details)
            details["summary"] = {
                "passes": self.summariser.passes,
                "age_seconds": None if snap is None else round(now - snap.built_at, 3),
                "online_farmers": None if snap is None else snap.online_farmers,
            }
            if now < self.farmers.claims_from:  # see registry.peers
                ok = False
                details["starting"] = ("other daemons on the database have not all seen "
                                       "this one yet")
            if not ok:
                request.setHeader(b"Retry-After", RETRY_AFTER)
            return self._text(request, 200 if ok else 503,
                              json.dumps(details, sort_keys=True).encode(), JSON)

        return self.database.check().addCallback(answer)


class _Guarded(web_resource.Resource):
    """The API's resource behind the checks that come before any work."""

    isLeaf = True

    def __init__(self, api: Any, routes: Any) -> None:
        super().__init__()
        self.api = api
        self.routes = routes

    def render(self, request: Any) -> Any:
        # Twisted's Request set its own name (and version) before calling us.
        request.setHeader(b"Server", SERVER)
        request.defaultContentType = PLAIN
        refused = self.api.refusal(request)
        if refused is not None:
            return refused
        path = request.path
        if path.startswith(_PING_PATH) and request.method == b"GET" \
                and _PLAIN_SEGMENT.fullmatch(path, len(_PING_PATH)):
            return self.api.render_ping(request, path[len(_PING_PATH):].decode("ascii"))
        return self.routes.render(request)
