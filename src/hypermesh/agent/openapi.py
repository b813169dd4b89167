"""The agent's OpenAPI description (``/openapi.json``): every endpoint, its query parameters and their limits."""

from __future__ import annotations

from hypermesh.agent.metrics.exposition import OPENMETRICS_TYPE, TEXT_TYPE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "AMOUNT_PATTERNS",
    "JSON_TYPE",
    "MAX_NAME",
    "MAX_PID",
    "MAX_SAMPLES_PER_RESPONSE",
    "MAX_SEQUENCE",
    "openapi_schema",
]

JSON_TYPE = "application/json"
MAX_SAMPLES_PER_RESPONSE = 3600
MAX_SEQUENCE = 2**63 - 1  # the schema's maximum for after=, far past any count
# An amount given as a string, per kind: a decimal number above 0 and a unit the kind takes (parse_amount's units,
# any letter case). The agent checks a string against its kind's pattern before parsing it.
_DECIMAL = r"([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]*\.[0-9]*[1-9][0-9]*)"
_BYTES = r"([bB]|[kKmMgGtT]([bB]|[iI][bB]?)?)?"
_BITS = r"[kKmMgGtT]?[bB][iI][tT]"
AMOUNT_PATTERNS = {
    "cpu": rf"^{_DECIMAL}m?$",
    "memory": rf"^{_DECIMAL}{_BYTES}$",
    "storage": rf"^{_DECIMAL}{_BYTES}$",
    "network": rf"^{_DECIMAL}({_BYTES}|{_BITS})(/s)?$",
    "gpu": rf"^{_DECIMAL}$",
}
MAX_NAME = 128
MAX_PID = 4 * 1024 * 1024  # PID_MAX_LIMIT on 64-bit Linux (include/linux/threads.h): no pid is larger
KINDS = ["cpu", "memory", "storage", "network", "gpu"]


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _program_pattern(programs: dict[str, Any]) -> str:
    """The spellings ``--ebpf`` takes: ``syscalls``, or ``xdp:IF`` with an interface name (Linux: 1-15 bytes, no
    '/', ':' or space)."""
    bare = "|".join(sorted(n for n, e in programs.items() if e.argument is None))
    with_argument = "|".join(sorted(n for n, e in programs.items() if e.argument is not None))
    pattern = f"^({bare})$"
    if with_argument:
        pattern += f"|^({with_argument}):[^/: \\t\\n\\x00]{{1,15}}$"
    return pattern


def _cpu_profile_paths() -> dict[str, Any]:
    """GET/POST /v1/cpu-profile and the flame graphs (agent/cpu_profile.py)."""
    common = {
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "405": {"$ref": "#/components/responses/MethodNotAllowed"},
        "431": {"$ref": "#/components/responses/HeadersTooLarge"},
        "503": {"$ref": "#/components/responses/Unavailable"},
    }
    return {
        "/v1/cpu-profile": {
            "get": {
                "summary": "whether this agent can profile the node's CPU (eBPF, CAP_BPF + CAP_PERFMON), and why not",
                "responses": {
                    "200": {"description": "availability", "content": {JSON_TYPE: {"schema": {"type": "object"}}}},
                    **common,
                },
            },
            "post": {
                "operationId": "cpuProfile",
                "summary": "profile every process for `seconds` and draw a flame graph (one at a time; a write)",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON_TYPE: {
                            "schema": {
                                "type": "object",
                                "properties": {"seconds": {"type": "number", "exclusiveMinimum": True, "minimum": 0}},
                            },
                            "example": {"seconds": 5},
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "the report's figures and its flame graph's URL",
                        "content": {JSON_TYPE: {"schema": {"type": "object"}}},
                    },
                    "400": _error_response("the body is not JSON"),
                    "403": _error_response("basic auth is off and the client is not on loopback"),
                    "409": _error_response("a profile is running, or this agent cannot profile (the reason)"),
                    "413": _error_response("the body is over 16 KiB"),
                    "415": _error_response("the body is not sent as application/json"),
                    "422": _error_response("seconds out of range (at most the agent's max_seconds)"),
                    **common,
                },
            },
        },
        "/v1/cpu-profile/{id}.svg": {
            "get": {
                "summary": "a flame graph the agent drew (it keeps the last 4)",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "an interactive SVG",
                        "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                    },
                    "404": _error_response("no such flame graph"),
                    **common,
                },
            }
        },
    }


def _config_paths() -> dict[str, Any]:
    """GET/PUT /v1/config (agent/live_config.py): what changes while the agent runs."""
    from hypermesh.agent.programs import AGENT_PROGRAMS
    from hypermesh.sampling.sampler import MAX_SECONDS, MIN_INTERVAL

    seconds = {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": MAX_SECONDS}
    live = {
        "interval": dict(seconds, minimum=MIN_INTERVAL, exclusiveMinimum=False),
        "history": seconds,
        "ebpf": {"type": "array", "items": {"type": "string", "pattern": _program_pattern(AGENT_PROGRAMS)}},
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f]*$"},
            "propertyNames": {"pattern": "^[A-Za-z0-9_]{1,64}$"},
        },
    }
    view = {
        "type": "object",
        "required": ["interval", "history", "ebpf", "labels", "generation", "hash"],
        "properties": {**live, "generation": {"type": "integer"}, "hash": {"type": "string"}},
    }
    common = {
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "405": {"$ref": "#/components/responses/MethodNotAllowed"},
        "431": {"$ref": "#/components/responses/HeadersTooLarge"},
        "503": {"$ref": "#/components/responses/Unavailable"},
    }
    ok = {"description": "the live configuration", "content": {JSON_TYPE: {"schema": view}}}
    return {
        "/v1/config": {
            "get": {
                "summary": "what of the configuration changes while the agent runs",
                "responses": {"200": ok, **common},
            },
            "put": {
                "summary": "change interval, history, eBPF programs or labels now (writes need auth, or loopback)",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON_TYPE: {
                            "schema": {"type": "object", "additionalProperties": False, "properties": live},
                            "example": {"interval": 0.5, "labels": {"rack": "r1"}},
                        }
                    },
                },
                "responses": {
                    "200": ok,
                    "400": _error_response("the body is not JSON"),
                    "403": _error_response("basic auth is off and the client is not on loopback"),
                    "413": _error_response("the body is over 16 KiB"),
                    "415": _error_response("the body is not sent as application/json"),
                    "422": _error_response("a key that needs a restart, or a value out of range"),
                    **common,
                },
            },
        }
    }


def _allocation_paths() -> dict[str, Any]:
    """POST/GET /v1/allocations and DELETE /v1/allocations/{id} (agent/allocations.py)."""
    common = {
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "405": {"$ref": "#/components/responses/MethodNotAllowed"},
        "431": {"$ref": "#/components/responses/HeadersTooLarge"},
        "503": _error_response("the ledger is unavailable (its state directory), overloaded or timed out"),
    }
    forbidden = _error_response(
        "basic auth is off and the client is not on loopback (127.0.0.0/8, ::1); or enforce names init, the agent "
        "itself or a kernel thread"
    )
    allocation = {"$ref": "#/components/schemas/Allocation"}
    return {
        "/v1/allocations": {
            "get": {
                "summary": "every live allocation of the node's ledger, oldest first (exited owners released first)",
                "responses": {
                    "200": {
                        "description": "the allocations",
                        "content": {JSON_TYPE: {"schema": {"type": "array", "items": allocation}}},
                    },
                    **common,
                },
            },
            "post": {
                "operationId": "allocate",
                "summary": "grant an amount of an asset (idempotent by id); writes need auth, or loopback without it",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON_TYPE: {
                            "schema": {"$ref": "#/components/schemas/AllocationRequest"},
                            "example": {"kind": "memory", "amount": "64MiB", "owner": "job-7", "id": "job-7-mem"},
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "granted",
                        "content": {JSON_TYPE: {"schema": allocation}},
                        "links": {
                            "release": {
                                "operationId": "releaseAllocation",
                                "parameters": {"id": "$response.body#/id"},
                                "description": "the id to release this grant with",
                            }
                        },
                    },
                    "200": {
                        "description": "already granted under this id (the same request again)",
                        "content": {JSON_TYPE: {"schema": allocation}},
                    },
                    "400": _error_response("the body is not JSON"),
                    "403": forbidden,
                    "404": _error_response("no asset of that kind has the id given as asset"),
                    "409": {
                        "description": "refused: not enough left (`left` says how much is), the GPU in use outside "
                        "any allocation, the id taken by another allocation, or the asset failed",
                        "content": {
                            JSON_TYPE: {
                                "schema": {
                                    "type": "object",
                                    "required": ["error"],
                                    "properties": {
                                        "error": {"type": "string"},
                                        "left": {"type": "number", "nullable": True},
                                    },
                                }
                            }
                        },
                    },
                    "413": _error_response("the body is over 16 KiB"),
                    "415": _error_response("the body is not sent as application/json"),
                    "422": _error_response(
                        "JSON that is not a valid request: a field's value, an amount's unit for the kind, enforce "
                        "without pid, a pid that is not running, a kind with several assets and no asset named"
                    ),
                    **common,
                },
            },
        },
        "/v1/allocations/{id}": {
            "delete": {
                "operationId": "releaseAllocation",
                "summary": "release an allocation (and remove its cgroup if it was enforced)",
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "released; the allocation it was",
                        "content": {JSON_TYPE: {"schema": allocation}},
                    },
                    "403": forbidden,
                    "404": _error_response("no allocation has this id (never made, or already released)"),
                    **common,
                },
            }
        },
    }


def _request_schema(kind: str) -> dict[str, Any]:
    name = {"type": "string", "minLength": 1, "maxLength": MAX_NAME}
    return {
        "type": "object",
        "required": ["kind", "amount", "owner"],
        "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": [kind]},
            "amount": {
                "oneOf": [
                    {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                    {"type": "string", "pattern": AMOUNT_PATTERNS[kind]},
                ],
            },
            "owner": dict(name, description="who holds the grant"),
            # null is taken as absent (what a client serialising an unset optional field sends).
            "asset": dict(name, nullable=True, description="which asset of the kind (needed where it has several)"),
            "id": dict(
                name, nullable=True, description="the allocation id; the same request again returns the first grant"
            ),
            "pid": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PID,
                "nullable": True,
                "description": "released once it exits",
            },
            "enforce": {"type": "boolean", "description": "hold pid to the grant with a cgroup (cpu, memory)"},
            "force": {"type": "boolean", "description": "grant a GPU other processes still use"},
        },
    }


def _allocation_schemas() -> dict[str, Any]:
    return {
        "AllocationRequest": {
            "description": "kind, amount (in the kind's unit, or a string with a unit it takes) and owner; asset "
            "where the kind has several (storage: a mountpoint, network: an interface, gpu: a uuid)",
            "oneOf": [{"$ref": f"#/components/schemas/{kind.capitalize()}Request"} for kind in KINDS],
        },
        **{f"{kind.capitalize()}Request": _request_schema(kind) for kind in KINDS},
        "Allocation": {
            "type": "object",
            "required": ["id", "owner", "kind", "asset_id", "amount", "created_at", "pid", "enforced"],
            "properties": {
                "id": {"type": "string"},
                "owner": {"type": "string"},
                "kind": {"type": "string", "enum": KINDS},
                "asset_id": {"type": "string"},
                "amount": {"type": "number"},
                "created_at": {"type": "number", "description": "Unix time"},
                "pid": {"type": "integer", "nullable": True},
                "enforced": {"type": "string", "nullable": True, "description": "its cgroup, when enforced"},
            },
        },
        "Snapshot": {
            "type": "object",
            "required": ["timestamp", "assets", "errors", "problems"],
            "properties": {
                "timestamp": {"type": "number"},
                "assets": {"type": "array", "items": {"$ref": "#/components/schemas/Asset"}},
                "errors": {"type": "object", "additionalProperties": {"type": "string"}},
                "problems": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "Asset": {
            "type": "object",
            "required": ["kind", "id", "unit", "capacity", "usage", "reserve", "allocated", "allocatable", "health"],
            "properties": {
                "kind": {"type": "string", "enum": KINDS},
                "id": {"type": "string"},
                "unit": {"type": "string"},
                "capacity": {"type": "number", "nullable": True},
                "usage": {"type": "number", "nullable": True},
                "reserve": {"type": "number"},
                "allocated": {"type": "number"},
                "allocatable": {"type": "number", "nullable": True},
                "health": {
                    "type": "object",
                    "required": ["status", "reason", "since"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "degraded", "failed"]},
                        "reason": {"type": "string", "nullable": True},
                        "since": {"type": "number"},
                    },
                },
                "details": {"type": "object"},
            },
        },
    }


def _not_without_etcd(operation: dict[str, Any]) -> dict[str, Any]:
    operation["get"]["responses"]["404"] = {
        "description": "this agent was not started with --etcd",
        "content": {JSON_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    return operation


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
            "description": "Samples, profile, assets and their allocations, eBPF status and Prometheus metrics of one "
            "machine.",
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
            "/v1/assets": get(
                "/v1/assets",
                "every asset (cpu, memory, storage, network, gpu): capacity, usage, allocated, allocatable, health; "
                "what `hypermesh assets --json` prints",
                JSON_TYPE,
                {"$ref": "#/components/schemas/Snapshot"},
            ),
            **_allocation_paths(),
            **_config_paths(),
            **_cpu_profile_paths(),
            "/v1/ebpf": get("/v1/ebpf", "eBPF availability and feature probe", JSON_TYPE, obj),
            "/v1/cluster": _not_without_etcd(
                get("/v1/cluster", "every agent registered in etcd: health, utilisation, allocations", JSON_TYPE, obj)
            ),
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
                },
                **_allocation_schemas(),
            },
        },
    }
