"""The allocation endpoints: ``GET``/``POST /v1/allocations`` and ``DELETE /v1/allocations/{id}``.

Who may write (read is as open as every other endpoint):

- With basic auth configured, the guard (security.py) has already refused any request without valid credentials
  (401) before it reaches these handlers: every write is by an authenticated user.
- Without basic auth, writes are taken only from loopback clients; anyone else gets 403 saying so. "Loopback" is
  what the kernel keeps on the host: 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. Linux routes the whole 127/8 to
  ``lo`` and drops packets from the wire that claim such a source (martians), so a peer with such an address
  is a process on this host (or in its network namespace).
- A POST must say ``Content-Type: application/json``. A browser sends a cross-site request without asking first
  only with a form content type; a JSON one (and any DELETE) needs a CORS preflight, which this agent never
  grants, so a page the user visits cannot allocate through a loopback agent.

Bodies are read up to MAX_BODY_BYTES (413 past it). Answers: 201 (a new grant) or 200 (the grant already made under
this id), 409 (refused: not enough left, with ``left``; a GPU in use; the id taken; the asset failed), 400 (not
JSON), 422 (JSON that is not a valid request: one message naming the field and the right form), 404 (DELETE of an
unknown id), 503 (the ledger is unavailable). Every error body is ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from hypermesh.agent.guards import MAX_BODY_BYTES
from hypermesh.agent.openapi import AMOUNT_PATTERNS, MAX_NAME, MAX_PID
from hypermesh.assets.amounts import parse_amount
from hypermesh.assets.ledger import KINDS, Refused, check_amount
from hypermesh.errors import BackendError, HypermeshError, InvalidInput, NotFound, PermissionDenied, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hypermesh.agent.node_assets import NodeAssets
    from hypermesh.assets.model import Allocation

__all__ = ["MAX_PID", "AllocationRoutes", "is_loopback", "json_body", "write_refusal"]

FIELDS = ("kind", "amount", "owner", "asset", "id", "pid", "enforce", "force")
# What the schema says an amount string of each kind is, checked as written there: parse_amount alone takes more
# (spaces, exponents, "ps"), which the schema would call invalid.
AMOUNT_FORMS = {
    "cpu": "cores: 2, 0.5 or 500m",
    "gpu": "devices: 1 or 0.5",
    "memory": "bytes: 1.5GiB, 512MiB, 500MB",
    "storage": "bytes: 10GiB, 500GB",
    "network": "bytes per second: 125MB, or bits: 1Gbit",
}
AMOUNTS = {kind: re.compile(pattern[1:-1], re.ASCII) for kind, pattern in AMOUNT_PATTERNS.items()}


def is_loopback(host: str) -> bool:
    """Whether a client address is this host's own (module docstring); a non-IP peer (a Unix socket) is local."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1, though Python 3.11 does not call it loopback
    return address.is_loopback


def write_refusal(auth: bool, request: Request, what: str) -> Response | None:
    """403 for a write from beyond loopback when basic auth is off (module docstring); None when it may proceed."""
    if auth:
        return None  # the guard let only authenticated users through
    client = request.client
    if client is None or is_loopback(client.host):
        return None
    return _error(
        403,
        f"writes from {client.host} are refused: basic auth is not configured, so only loopback clients "
        f"(127.0.0.0/8, ::1) may {what}; add basic_auth_users to the agent's config (docs/agent.md)",
    )


async def json_body(request: Request, what: str) -> bytes | Response:
    """The body of a JSON write, at most MAX_BODY_BYTES; or the 415/413/400 answer to send instead."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        return _error(415, f"send {what} as JSON with Content-Type: application/json")
    length = request.headers.get("content-length")
    too_large = f"the body is over {MAX_BODY_BYTES} bytes; {what} is a small object"
    if length is not None and (not length.isascii() or not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return _error(413, too_large)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _error(413, too_large)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody left to read it
    return bytes(body)


def _error(status: int, message: str, **extra: Any) -> Response:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _name(data: dict[str, Any], field: str, required: bool) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            raise InvalidInput(f'{field} is required: a name, e.g. "{field}": "job-7"')
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME or not value.isprintable():
        raise InvalidInput(f"{field} must be 1-{MAX_NAME} printable characters")
    return value


def parse_request(body: bytes) -> dict[str, Any]:
    """The allocation a POST body asks for, as keyword arguments of NodeAssets.allocate; InvalidInput otherwise."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _NotJson(f"the body is not JSON ({exc}); send an object such as "
                       '{"kind": "cpu", "amount": 0.5, "owner": "job-7"}') from None  # fmt: skip
    if not isinstance(data, dict):
        raise InvalidInput('the body must be a JSON object such as {"kind": "cpu", "amount": 0.5, "owner": "job-7"}')
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; known: {', '.join(FIELDS)}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of: {', '.join(KINDS)}")
    amount = data.get("amount")
    if isinstance(amount, str):
        if not AMOUNTS[kind].fullmatch(amount):
            raise InvalidInput(f"bad {kind} amount {amount!r}: use {AMOUNT_FORMS[kind]}")
        value = parse_amount(kind, amount)
    elif isinstance(amount, int | float) and not isinstance(amount, bool):
        try:
            value = float(amount)  # a JSON integer of 400 digits is a Python int no float can hold
        except OverflowError:
            value = math.inf
        if not math.isfinite(value) or value <= 0:
            raise InvalidInput('amount must be a finite number above 0 (or a string such as "1.5GiB")')
        value = check_amount(value)
    else:
        raise InvalidInput('amount is required: a number (0.5 cores, bytes) or a string such as "1.5GiB" or "500m"')
    pid = data.get("pid")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid <= MAX_PID):
        raise InvalidInput(f"pid must be a process id 1..{MAX_PID}")
    flags = {}
    for flag in ("enforce", "force"):
        flags[flag] = data.get(flag, False)
        if not isinstance(flags[flag], bool):
            raise InvalidInput(f"{flag} must be true or false")
    if flags["enforce"] and pid is None:
        raise InvalidInput("enforce needs pid: the process to hold to the grant")
    return {
        "kind": kind,
        "amount": value,
        "owner": _name(data, "owner", True),
        "asset_id": _name(data, "asset", False),
        "id": _name(data, "id", False),
        "pid": pid,
        "enforce": flags["enforce"],
        "force": flags["force"],
    }


class _NotJson(InvalidInput):
    pass


def _status(exc: HypermeshError) -> int:
    if isinstance(exc, _NotJson):
        return 400
    if isinstance(exc, Refused | BackendError):
        return 409  # a valid request the node's state does not allow now (not enough left, a failed asset)
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, NotFound):
        return 404  # the asset named
    if isinstance(exc, InvalidInput | Unsupported):
        return 422
    return 503


class AllocationRoutes:
    """The three handlers over one NodeAssets; ``auth`` says whether the guard authenticates every request."""

    def __init__(self, assets: NodeAssets, auth: bool) -> None:
        self.assets = assets
        self.auth = auth

    def _write_refusal(self, request: Request) -> Response | None:
        return write_refusal(self.auth, request, "allocate or release")

    def _unavailable(self) -> Response | None:
        if self.assets.ledger is None:
            return _error(503, f"the allocation ledger is unavailable: {self.assets.ledger_error}")
        return None

    async def list_or_create(self, request: Request) -> Response:
        return await (self.create(request) if request.method == "POST" else self.list(request))

    async def list(self, request: Request) -> Response:
        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable
        try:
            grants = await asyncio.to_thread(self.assets.allocations)
        except HypermeshError as exc:
            return _error(503, str(exc))
        return JSONResponse([g.to_dict() for g in grants])

    async def create(self, request: Request) -> Response:
        refusal = self._write_refusal(request) or self._unavailable()
        if refusal is not None:
            return refusal
        body = await json_body(request, "an allocation request")
        if isinstance(body, Response):
            return body
        try:
            wanted = parse_request(body)
            # One hop to a worker thread, not two: each costs the event loop a wake-up (a cluster allocation waits
            # for this answer).
            grant, created = await asyncio.to_thread(self._allocate, wanted)
        except Refused as exc:
            return _error(409, str(exc), left=exc.left)
        except HypermeshError as exc:
            return _error(_status(exc), str(exc))
        except OSError as exc:  # the disk under the ledger, a cgroup write
            return _error(503, f"the allocation could not be written: {exc.strerror or exc}")
        return JSONResponse(grant.to_dict(), status_code=201 if created else 200)

    def _allocate(self, wanted: dict[str, Any]) -> tuple[Allocation, bool]:
        """The grant, and whether this request made it (201) rather than finding it made under its id (200)."""
        existing = self.assets.need_ledger().find(wanted["id"]) if wanted["id"] is not None else None
        grant = self.assets.allocate(**wanted)
        return grant, existing is None or existing != grant

    async def delete(self, request: Request) -> Response:
        refusal = self._write_refusal(request) or self._unavailable()
        if refusal is not None:
            return refusal
        id = request.path_params["id"]
        try:
            gone = await asyncio.to_thread(self.assets.release, id)
        except HypermeshError as exc:
            return _error(503, str(exc))
        except OSError as exc:
            return _error(503, f"the release could not be written: {exc.strerror or exc}")
        if gone is None:
            return _error(404, f"no allocation {id!r}; GET /v1/allocations lists them")
        return JSONResponse(gone.to_dict())
