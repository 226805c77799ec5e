"""Error bodies the real provider APIs send, for the loopback fakes; each says its source.

One place, so every fake (unit tests' pytest-httpserver handlers, faultkit's FaultServer)
answers a failure with the same status and body. docs/providers.md lists the same sources.
"""

from __future__ import annotations

# --- Electricity Maps v3 -----------------------------------------------------------------

# A rejected token: HTTP 401 with this body (issue #28, checked against the Electricity Maps
# v3 API documentation, https://static.electricitymap.org/api/docs/ "Authentication", and
# the 401 answers quoted in public clients' issue threads).
EM_BAD_TOKEN = ({"error": "Invalid auth-token"}, 401)


def em_not_in_plan(zone: str, request_type: str) -> tuple[dict, int]:
    """A valid token whose plan lacks this endpoint for this zone: HTTP 401 (not 403), with
    the zone and request type in ``error`` and the explanation in ``message``. Shape as
    free-tier users quote it (e.g. ``requestType=past,dataType=power-breakdown`` for
    /v3/power-breakdown/past) and as issue #28 gives it; request types by endpoint:
    latest, history, past-range, forecast."""
    return (
        {
            "error": f"Request unauthorized for zoneKey={zone},requestType={request_type},"
            "dataType=carbon-intensity.",
            "message": "You do not have access to this specific endpoint for this specific "
            "zone. Please visit https://help.electricitymaps.com if this is a mistake",
        },
        401,
    )


def em_unknown_zone(zone: str) -> tuple[dict, int]:
    """A zone key that does not exist: HTTP 404. The v3 documentation prints no body for
    this case; this shape is the project's assumption (the client keys on the status, and
    on a 400 whose text names the zone), kept as the project has always assumed it."""
    return {"status": "error", "message": f"Zone '{zone}' does not exist."}, 404


# --- WattTime v3 --------------------------------------------------------------------------

# A region the plan does not cover, after a good /login: HTTP 403 (WattTime v3 docs, "Data
# access": free accounts reach historical and forecast for CAISO_NORTH only; the client keys
# on 403-after-login, not on this text, whose exact wording WattTime does not publish).
WT_NOT_IN_PLAN = (
    {"error": "Unauthorized", "message": "Your account does not have access to this region"},
    403,
)


def wt_validation_error(parameter: str, message: str) -> tuple[dict, int]:
    """A query parameter the API rejects: HTTP 422 with FastAPI's validation body (the v3
    API is a FastAPI service; its OpenAPI document lists 422 "Validation Error" with
    ``HTTPValidationError``: ``{"detail": [{"loc", "msg", "type"}]}``)."""
    return (
        {"detail": [{"loc": ["query", parameter], "msg": message, "type": "value_error"}]},
        422,
    )


# --- UK Carbon Intensity API -------------------------------------------------------------


def ukci_error(code: str, message: str) -> dict:
    """The API's error object (https://carbon-intensity.github.io/api-definitions/ "Error"
    schema): ``{"error": {"code": "400 Bad Request", "message": ...}}``, sent with the HTTP
    status its code names (400 for a bad postcode or region, 500)."""
    return {"error": {"code": code, "message": message}}
