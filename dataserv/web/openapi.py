"""The OpenAPI 3.1 description of every route, served at /api/openapi.json.

Each route is one entry of ROUTES, built with :func:`get`; adding a route to the
API means adding its entry here (tests/test_openapi.py checks that every Klein
route has one). Error bodies are short text: the legacy routes send them as
``text/html`` (what 2.2.x sent), so both text types are described for them.
"""

import functools
import json
from typing import Any, Dict, Iterable, List, Optional, Tuple

from dataserv import __version__
from dataserv.web import static_files

TEXT_TYPES = ("text/plain", "text/html")

# -- schemas -----------------------------------------------------------------

_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer"}
_STRING = {"type": "string"}

SCHEMAS: Dict[str, Any] = {
    "RegisteredPlot": {"type": "object", "required": ["plot_id", "k", "new"]},
    "RemovedPlot": {"type": "object",
                    "required": ["plot_id", "removed", "plots", "verified_bytes"],
                    "properties": {"plot_id": _STRING, "removed": {"type": "boolean"},
                                   "plots": {"type": "integer"},
                                   "verified_bytes": {"type": "integer"}}},
    "Challenges": {"type": "object", "required": ["challenges"]},
    "Answers": {"type": "object", "required": ["answers"]},
    "Address": {"type": "object", "required": ["address"],
                "properties": {"address": _STRING}},
    "Farmer": {
        "type": "object",
        "required": ["btc_addr", "payout_addr", "height", "last_seen"],
        "properties": {
            "btc_addr": {"type": "string", "description": "the farmer's P2PKH address"},
            "payout_addr": {"type": "string", "description": "P2PKH or P2SH address"},
            "height": {"type": "integer", "minimum": 0, "description": "credited height"},
            "claimed_height": {"type": "integer", "minimum": 0,
                               "description": "the last height the farmer claimed"},
            "last_seen": {"type": "integer", "minimum": 0,
                          "description": "whole seconds since the last contact"},
            "nodeid": {"type": "string", "pattern": "^[0-9a-f]{40}$"},
            "reg_time": {"type": "integer", "description": "Unix seconds"},
            "uptime": {"type": "number", "minimum": 0, "maximum": 100,
                       "description": "percent"},
            "bandwidth_upload": _NUMBER,
            "bandwidth_download": _NUMBER,
        },
    },
    "FarmerStatus": {"allOf": [{"$ref": "#/components/schemas/Farmer"}, {
        "type": "object",
        "required": ["online", "online_until", "audits"],
        "properties": {
            "online": {"type": "boolean"},
            "online_until": {"type": "integer", "description": "Unix seconds"},
            "audits": {"type": "integer", "minimum": 0},
            "last_audit_block": {"type": ["integer", "null"]},
        },
    }]},
    "Online": {"type": "object", "required": ["farmers"], "properties": {
        "farmers": {"type": "array", "items": {"$ref": "#/components/schemas/Farmer"}}}},
    "Total": {"type": "object", "required": ["id", "total_TB", "total_farmers"], "properties": {
        "id": {"type": "integer", "description": "UTC epoch minutes / 30"},
        "total_TB": {"type": "number", "description": "claimed terabytes of online farmers"},
        "verified_TB": {"type": "number", "description": "terabytes backed by proofs"},
        "total_farmers": {"type": "integer", "minimum": 0}}},
    "History": {"type": "object", "required": ["since", "until", "history"], "properties": {
        "since": _NUMBER, "until": _NUMBER,
        "history": {"type": "array", "maxItems": 1000, "items": {
            "type": "object",
            "required": ["time", "total_farmers", "total_TB", "total_height"],
            "properties": {"time": _INTEGER, "total_farmers": _INTEGER,
                           "total_TB": _NUMBER, "verified_TB": _NUMBER,
                           "total_height": _INTEGER}}}}},
    "Health": {"type": "object", "required": ["database"], "properties": {
        "database": {"enum": ["ok", "unavailable"]},
        "reason": _STRING,
        "schema_version": _INTEGER,
        "connections": {"type": "object"},
        "summary": {"type": "object"}}},
    "OpenAPI": {"type": "object", "required": ["openapi", "paths"]},
}

# -- building blocks ---------------------------------------------------------


def _text(description: str, types: Iterable[str] = TEXT_TYPES) -> Dict[str, Any]:
    return {"description": description,
            "content": {t: {"schema": {"type": "string"}} for t in types}}


def _json(schema: str, description: str) -> Dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/%s" % schema}}}}


def _with_header(response: Dict[str, Any], name: str, description: str) -> Dict[str, Any]:
    response = dict(response)
    response["headers"] = {name: {"description": description, "schema": _STRING}}
    return response


def path_parameter(name: str, description: str, schema: Optional[Dict] = None) -> Dict:
    """A required path parameter."""
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string", "minLength": 1}}


FARMER_ID = path_parameter("farmer_id", "a P2PKH address or its 40-hex-digit nodeid")
DATE = {"name": "Date", "in": "header", "required": False, "schema": _STRING,
        "description": "RFC 2822 date within --auth-timeout of the server's clock; "
                       "signed with the server address in Authorization"}
UNAVAILABLE = _with_header(_text("the database cannot be reached, or the lists are being "
                                 "built; try again later"),
                           "Retry-After", "seconds")
UNAUTHENTICATED = _with_header(_text("missing or invalid Date/Authorization"),
                               "X-Clock-Skew", "server minus client clock, seconds, when "
                               "the Date was outside the window")
NOT_FOUND = _text("unknown farmer, or a path this route does not match")
TOO_MANY = _with_header(_text("this client IP sent more than --rate-limit requests a second "
                              "(after a --rate-burst), or a per-farmer or per-network limit "
                              "was reached"),
                        "Retry-After", "seconds until the request would be accepted")

# (status, response) lists shared by the signed routes.
SIGNED = (("400", _text("invalid id or value")), ("401", UNAUTHENTICATED),
          ("404", NOT_FOUND), ("503", UNAVAILABLE))


def get(path: str, operation_id: str, summary: str, ok: Dict[str, Any],
        errors: Iterable[Tuple[str, Dict[str, Any]]] = (),
        parameters: Iterable[Dict[str, Any]] = (), signed: bool = False,
        tags: Tuple[str, ...] = ("beyond",)) -> Tuple[str, Dict[str, Any]]:
    """One GET route: its path and its operation object."""
    responses = {"200": ok}
    responses.update({status: response for status, response in errors})
    # Any path can miss the route (a parameter the router does not match), and every
    # route is behind the per-IP rate limit.
    responses.setdefault("404", NOT_FOUND)
    responses.setdefault("429", TOO_MANY)
    operation: Dict[str, Any] = {
        "operationId": operation_id, "summary": summary, "tags": list(tags),
        "parameters": list(parameters) + ([DATE] if signed else []),
        "responses": responses,
    }
    if signed:
        operation["security"] = [{"legacySignature": []}]
    return path, {"get": operation}


def _signed(path: str, operation_id: str, summary: str, accepted: str,
            extra: Iterable[Tuple[str, Dict[str, Any]]] = (),
            parameters: Iterable[Dict[str, Any]] = (),
            tags: Tuple[str, ...] = ("beyond",)) -> Tuple[str, Dict[str, Any]]:
    return get(path, operation_id, summary, _text(accepted), SIGNED + tuple(extra),
               (FARMER_ID,) + tuple(parameters), signed=True, tags=tags)


_LEGACY = ("legacy",)
_PROOFS = ("proofs",)


def _request_bound(path: str, method: str, operation_id: str, summary: str,
                   ok: Dict[str, Any], extra: Iterable[Tuple[str, Dict[str, Any]]] = (),
                   body: Optional[Dict[str, Any]] = None,
                   parameters: Iterable[Dict[str, Any]] = ()) -> Tuple[str, Dict[str, Any]]:
    """A proof-of-space route: DATASERV-V2 headers only; GET, DELETE, or POST with a
    JSON body."""
    _, item = get(path, operation_id, summary, ok,
                  SIGNED + (("413", _text("body over --max-body or the route's cap")),)
                  + tuple(extra), [FARMER_ID] + list(parameters), signed=True,
                  tags=_PROOFS)
    operation = item["get"]
    operation["security"] = [{"dataservV2": []}]
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": body}}}
    return path, {method: operation}

ROUTES: List[Tuple[str, Dict[str, Any]]] = [
    get("/api/address", "address", "The server's address, which farmers sign for.",
        _json("Address", "the address"), tags=_LEGACY),
    get("/api/register/{farmer_id}", "register", "Register a farmer (payout = its address).",
        _json("Farmer", "the new farmer"),
        SIGNED + (("409", _text("already registered")),), [FARMER_ID], signed=True,
        tags=_LEGACY),
    get("/api/register/{farmer_id}/{payout}", "register_with_payout",
        "Register a farmer with a payout address.", _json("Farmer", "the new farmer"),
        SIGNED + (("409", _text("already registered")),),
        [FARMER_ID, path_parameter("payout", "a P2PKH or P2SH address")], signed=True,
        tags=_LEGACY),
    _signed("/api/ping/{farmer_id}", "ping", "Keep-alive.", "Ping accepted.", tags=_LEGACY),
    _signed("/api/height/{farmer_id}/{height}", "height", "Report the farmer's height.",
            "Height accepted.", (("413", _text("height at or above --height-limit")),),
            [path_parameter("height", "a non-negative integer")], tags=_LEGACY),
    get("/api/online", "online", "Online farmers as 2.2.x's HTML fragment.",
        _text("one entry per online farmer", ("text/html",)), [("503", UNAVAILABLE)],
        tags=_LEGACY),
    get("/api/online/json", "online_json", "Online farmers as JSON.",
        _json("Online", "online farmers, by height"), [("503", UNAVAILABLE)], tags=_LEGACY),
    get("/api/total", "total", "Online farmers and the terabytes they claim.",
        _json("Total", "the totals"), [("503", UNAVAILABLE)], tags=_LEGACY),
    _signed("/api/bandwidth/{farmer_id}/{upload}/{download}", "bandwidth",
            "Report bandwidth.", "Bandwidth accepted.",
            parameters=[path_parameter("upload", "a non-negative number"),
                        path_parameter("download", "a non-negative number")]),
    _signed("/api/audit/{farmer_id}/{block}/{response}", "audit",
            "Answer an audit for a block.", "Audit accepted.",
            (("409", _text("this block was audited already")),),
            [path_parameter("block", "a non-negative integer"),
             path_parameter("response", "a SHA-256, 64 hex digits")]),
    get("/api/farmer/{farmer_id}", "farmer", "One farmer's status.",
        _json("FarmerStatus", "the farmer"),
        [("400", _text("invalid id")), ("503", UNAVAILABLE)], [FARMER_ID]),
    get("/api/total/history", "total_history", "Totals over time (at most 1000 points).",
        _json("History", "the history"),
        [("400", _text("since/until not numbers, or since after until")),
         ("503", UNAVAILABLE)],
        [{"name": name, "in": "query", "required": False, "schema": _NUMBER,
          "description": "Unix seconds (default: %s)" % default}
         for name, default in (("since", "a week ago"), ("until", "now"))]),
    get("/api/openapi.json", "openapi", "This document.", _json("OpenAPI", "OpenAPI 3.1")),
    get("/health", "health", "Whether the database is ready.", _json("Health", "ready"),
        [("503", _with_header(_json("Health", "not ready, with the reason"),
                              "Retry-After", "seconds"))]),
    get("/metrics", "metrics", "Prometheus metrics (text format 0.0.4).",
        _text("metrics", ("text/plain",)), [("403", _text("not from --metrics-allow"))]),
    _request_bound("/api/proofs/{farmer_id}/plots", "post", "register_plot",
                   "Register a plot (its id is worked out from the farmer and the seed).",
                   _json("RegisteredPlot", "the plot"),
                   [("403", _text("the farmer has --max-plots plots already")),
                    ("409", _text("the seed is registered with another k"))],
                   {"type": "object", "required": ["seed", "k"], "properties": {
                       "seed": {"type": "string", "description": "32 bytes, hex"},
                       "k": {"type": "integer"}}}),
    _request_bound("/api/proofs/{farmer_id}/plots/{plot_id}", "delete", "remove_plot",
                   "Remove one of the farmer's plots: no longer challenged nor counted.",
                   _json("RemovedPlot", "the farmer's plots and verified bytes without it"),
                   parameters=[path_parameter("plot_id", "the plot's id, 64 hex digits")]),
    _request_bound("/api/proofs/{farmer_id}/challenges", "get", "challenges",
                   "The farmer's open challenges; fetching starts each one's window.",
                   _json("Challenges", "open challenges")),
    _request_bound("/api/proofs/{farmer_id}/answers", "post", "answers",
                   "Proofs for fetched challenges; each is checked with chiapos.",
                   _json("Answers", "one outcome per challenge"), (),
                   {"type": "object", "required": ["answers"], "properties": {
                       "answers": {"type": "array", "items": {"type": "object"}}}}),
] + [
    get(path, "static_%d" % n, "The dashboard: " + name,
        {"description": name, "content": {content_type.split(";")[0]: {"schema": _STRING}},
         "headers": {"Cache-Control": {"schema": _STRING}, "ETag": {"schema": _STRING}}},
        [("304", {"description": "not modified (If-None-Match)"})], tags=("dashboard",))
    for n, (path, (name, content_type, _)) in enumerate(sorted(static_files.FILES.items()))
]


def document() -> Dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "dataserv", "version": __version__,
                 "description": "Federated registry for storage farmers. Error bodies "
                                "are short text; the legacy routes keep dataserv 2.2.x's "
                                "answers byte for byte."},
        "paths": dict(ROUTES),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"dataservV2": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "DATASERV-V2 <nonce> <signature>: the request-bound scheme "
                               "of README's Security section"},
                "legacySignature": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "base64 of a compact recoverable secp256k1 signature of "
                               "'<server address> <Date header>', Bitcoin signed-message "
                               "style, by the farmer's key"}},
        },
    }


@functools.lru_cache(maxsize=None)
def document_bytes() -> bytes:
    """The document as JSON bytes (built once per process)."""
    return json.dumps(document(), sort_keys=True).encode("utf-8")
