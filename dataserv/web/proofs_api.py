"""The proof-of-space routes, a Klein app of their own mounted at /api/proofs/.

Four signed routes, all under ``/api/proofs/<id>/``:

- ``POST plots``: register a plot (``{"seed": "<64 hex>", "k": <int>}``);
- ``DELETE plots/<plot id>``: remove one (no body);
- ``GET challenges``: the farmer's open challenges (the first fetch starts each one's
  proof window);
- ``POST answers``: the proofs found (``{"answers": [{"plot_id", "challenge",
  "proofs": [...]}]}``).

They build the rules' Request through the main API (``API._rules_request``) and
answer errors through its one table (``ERRORS``), so they are authenticated exactly
as the other signed routes.
"""

from typing import Any

from klein import Klein
from twisted.internet import defer
from werkzeug.exceptions import HTTPException

from dataserv.proofs import rules
from dataserv.web import render

JSON = b"application/json"


def _body(request: Any) -> bytes:
    """The request body, at most one byte more than the rules accept."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    return content.read(rules.MAX_BODY + 1)


class ProofsAPI:
    """The routes; ``api`` is the main :class:`dataserv.web.api.API`, ``proofs`` the
    rules (:class:`dataserv.proofs.rules.Proofs`)."""

    app = Klein()

    def __init__(self, api: Any, proofs: Any) -> None:
        self.api = api
        self.proofs = proofs

    def resource(self) -> Any:
        """The twisted.web resource for these routes."""
        return self.app.resource()

    @app.handle_errors(HTTPException)
    def _http_error(self, request: Any, failure: Any) -> Any:
        """This app's routing errors (a path under /api/proofs/ that is none of its
        routes, a method it does not take) as the main app answers its own: short
        text, not werkzeug's HTML."""
        return self.api._http_error(request, failure)

    @app.handle_errors(Exception)
    def _unexpected(self, request: Any, failure: Any) -> Any:
        """A bug in these routes as in the main app's: logged with its traceback,
        answered with one line (not Twisted's HTML page)."""
        return self.api._unexpected(request, failure)

    def _json(self, request: Any, value: Any) -> Any:
        return self.api._text(request, 200, render.json_bytes(value), JSON)

    def _call(self, route: str, request: Any, call: Any, *args: Any) -> "defer.Deferred[Any]":
        """Run a rule with the request's Request ("now" read here, once)."""
        rules_request = self.api._rules_request(request, self.api.clock.seconds())
        return defer.maybeDeferred(lambda: call(*args, rules_request))

    @app.route("/<farmer_id>/plots", methods=["POST"])
    def register_plot(self, request: Any, farmer_id: str) -> Any:
        """Register a plot; answers its id as the server computed it."""
        d = self._call("plot", request, self.proofs.register_plot, farmer_id, _body(request))
        return self.api._answer("plot", request, d, lambda plot: self._json(request, {
            "plot_id": plot.plot_id.hex(), "k": plot.k, "new": plot.new}))

    @app.route("/<farmer_id>/plots/<plot_id>", methods=["DELETE"])
    def remove_plot(self, request: Any, farmer_id: str, plot_id: str) -> Any:
        """Remove a plot; answers the farmer's plots and verified bytes without it."""
        d = self._call("remove_plot", request, self.proofs.remove_plot, farmer_id, plot_id)
        return self.api._answer("remove_plot", request, d, lambda removed: self._json(
            request, {"plot_id": removed.plot_id.hex(), "removed": True,
                      "plots": removed.plots, "verified_bytes": removed.verified_bytes}))

    @app.route("/<farmer_id>/challenges", methods=["GET"])
    def challenges(self, request: Any, farmer_id: str) -> Any:
        """The farmer's open challenges, each with the deadline of its answer."""
        d = self._call("challenges", request, self.proofs.challenges, farmer_id)
        window = self.proofs.settings.proof_window
        return self.api._answer("challenges", request, d, lambda found: self._json(request, {
            "proof_window": window,
            "challenges": [{
                "plot_id": c.plot_id.hex(), "k": c.k, "challenge": c.challenge.hex(),
                "deadline": c.fetched_at + window} for c in found]}))

    @app.route("/<farmer_id>/answers", methods=["POST"])
    def answers(self, request: Any, farmer_id: str) -> Any:
        """Answer challenges with proofs; says what became of each answer."""
        d = self._call("answers", request, self.proofs.answer, farmer_id, _body(request))

        def outcomes(found: Any) -> Any:
            return self._json(request, {
                "counted": sum(1 for o in found if o.outcome == "counted"),
                "valid_proofs": sum(o.valid for o in found),
                "answers": [{"challenge": o.challenge.hex(), "outcome": o.outcome,
                             "valid_proofs": o.valid} for o in found]})

        return self.api._answer("answers", request, d, outcomes)
