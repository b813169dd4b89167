"""The agent's OpenAPI description (``/openapi.json``): every endpoint, its query parameters and their limits."""

from __future__ import annotations

from hypermesh.agent.metrics.exposition import OPENMETRICS_TYPE, TEXT_TYPE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["JSON_TYPE", "MAX_SAMPLES_PER_RESPONSE", "MAX_SEQUENCE", "openapi_schema"]

JSON_TYPE = "application/json"
MAX_SAMPLES_PER_RESPONSE = 3600
MAX_SEQUENCE = 2**63 - 1  # the schema's maximum for after=, far past any count


def openapi_schema(version: str) -> dict[str, Any]:
    def get(
        path: str,
        summary: str,
        content: str | list[str],
        schema: dict[str, Any],
        params: list[dict[str, Any]] | None = None,
        not_found: bool = False,
    ) -> Any:
        types = [content] if isinstance(content, str) else content
        responses: dict[str, Any] = {
            "200": {"description": summary, "content": {kind: {"schema": schema} for kind in types}}
        }
        if params:
            responses["400"] = {
                "description": "a query value is malformed",
                "content": {JSON_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        if not_found:
            responses["404"] = {
                "description": "what this endpoint serves is not running on this agent",
                "content": {JSON_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        if path != "/healthz":
            responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
        responses["405"] = {"$ref": "#/components/responses/MethodNotAllowed"}
        responses["431"] = {"$ref": "#/components/responses/HeadersTooLarge"}
        responses["503"] = {"$ref": "#/components/responses/Unavailable"}
        op: dict[str, Any] = {"summary": summary, "responses": responses}
        if params:
            op["parameters"] = params
        return {"get": op}

    obj = {"type": "object"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "hypermesh node agent",
            "version": version,
            "description": "Samples, profile, eBPF status and Prometheus metrics of one machine.",
        },
        "paths": {
            "/healthz": get("/healthz", "liveness and sampler health", JSON_TYPE, obj),
            "/metrics": get(
                "/metrics",
                "Prometheus text format 0.0.4, or OpenMetrics 1.0 when the Accept header prefers it",
                [TEXT_TYPE.split(";")[0], OPENMETRICS_TYPE.split(";")[0]],
                {"type": "string"},
            ),
            "/v1/profile": get("/v1/profile", "what this machine is (SystemProfile)", JSON_TYPE, obj),
            "/v1/sample": get("/v1/sample", "the latest sample (rates over the last interval)", JSON_TYPE, obj),
            "/v1/samples": get(
                "/v1/samples",
                "samples newer than `since` (Unix time) and numbered after `after`, oldest first; with `limit`, the newest "
                "`limit` of them",
                JSON_TYPE,
                {
                    "type": "object",
                    "required": ["interval_s", "sequence", "samples"],
                    "properties": {
                        "interval_s": {"type": "number"},
                        "sequence": {"type": "integer", "description": "the latest sample's sequence number"},
                        "samples": {"type": "array", "items": obj},
                    },
                },
                [
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "description": "Unix time in seconds; only samples taken after it",
                        "schema": {"type": "number"},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "sequence number (the stream's event id); only samples numbered after it",
                        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQUENCE},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES_PER_RESPONSE},
                    },
                ],
            ),
            "/v1/stream": get(
                "/v1/stream",
                "server-sent events: one `data: <Sample JSON>` line pair per new sample, until the client leaves",
                "text/event-stream",
                {"type": "string"},
            ),
            "/v1/events": get(
                "/v1/events",
                "server-sent events: one `data: <exec event JSON>` per program executed on this machine, while the "
                "agent runs `--ebpf execsnoop` (404 otherwise); a client that falls behind loses events, counted in "
                "the next event's `dropped`",
                "text/event-stream",
                {"type": "string"},
                not_found=True,
            ),
            "/": get("/", "the live dashboard (HTML; its files are under /static/)", "text/html", {"type": "string"}),
            "/v1/assets": get("/v1/assets", "capacities: cpu, memory, storage, network, gpu", JSON_TYPE, obj),
            "/v1/ebpf": get("/v1/ebpf", "eBPF availability and feature probe", JSON_TYPE, obj),
            "/openapi.json": get("/openapi.json", "this document", JSON_TYPE, obj),
        },
        "components": {
            "responses": {
                "Unauthorized": {
                    "description": "basic auth is configured and the credentials are missing or wrong",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                },
                "MethodNotAllowed": {
                    "description": "never for GET or HEAD: every other method gets 405 (listed here for completeness)"
                },
                "HeadersTooLarge": {"description": "the request headers exceed 16 KiB"},
                "Unavailable": {
                    "description": "overloaded (in-flight or connection cap), timed out, or no data yet; retry "
                    "after Retry-After seconds",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                }
            },
        },
    }
