"""What to tell someone whose listening address cannot be bound: the problem and the fix, in one line.

Two come up on a first run: the port is taken (a second ``make run`` while one serves) and the address is not
one of this host's (a LAN address copied from another machine). The fix names the setting they typed: ``--listen``,
or ``make run LISTEN=...`` when the Makefile started us (it sets HYPERMESH_VIA_MAKE=1).
"""

from __future__ import annotations

import json
import os

from hypermesh.errors import BackendError, InvalidInput

__all__ = ["address_in_use", "address_not_here", "listen_setting"]

HEALTH_PROBE_TIMEOUT_S = 0.5


def listen_setting(address: str) -> str:
    """How the user sets the address: the Makefile's variable when it started us, else the flag."""
    if os.environ.get("HYPERMESH_VIA_MAKE") == "1":
        return f"`make run LISTEN={address}`"
    return f"--listen {address}"


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_in_use(host: str, port: int) -> BackendError:
    """EADDRINUSE: another hypermesh agent (it answers /healthz as ours does) or another program holds the port."""
    where = _shown(host, port)
    fix = f"stop it or use {listen_setting(_shown(host, 0))} (any free port)"
    if _is_hypermesh_agent(host, port):
        return BackendError(f"another agent already serves {where}: {fix}")
    return BackendError(f"{where} is already in use by another program: {fix}")


def _is_hypermesh_agent(host: str, port: int) -> bool:
    """Whether /healthz on the port answers as ours does, over HTTP or else over HTTPS (a TLS agent)."""
    probe = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host
    return _answers_as_agent(probe, port, tls=False) or _answers_as_agent(probe, port, tls=True)


def _answers_as_agent(host: str, port: int, tls: bool) -> bool:
    import http.client

    connection: http.client.HTTPConnection
    if tls:
        import ssl

        # Only to recognise what holds the port, never to trust it: no certificate check (the agent's may be
        # self-signed, or issued for another name), and no credentials are sent (/healthz needs none).
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=HEALTH_PROBE_TIMEOUT_S, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=HEALTH_PROBE_TIMEOUT_S)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = json.loads(response.read(4096))
    except (OSError, ValueError, http.client.HTTPException):
        return False  # not HTTP(S), a TLS server that wants a client certificate, or too slow: not sure it is ours
    finally:
        connection.close()
    return isinstance(body, dict) and "last_sample_age_s" in body


def address_not_here(host: str, port: int, reason: str) -> InvalidInput:
    """EADDRNOTAVAIL: the address belongs to no interface of this host; name the ones it has."""
    addresses = _host_addresses()
    listed = "; ".join(f"{name} {', '.join(addrs)}" for name, addrs in addresses.items()) or "none found"
    every, loopback = ("::", "::1") if ":" in host else ("0.0.0.0", "127.0.0.1")
    return InvalidInput(
        f"--listen {_shown(host, port)}: {host} is not an address of this host ({reason}); its addresses: {listed}; "
        f"use one of them, or {every} for all, e.g. {listen_setting(_shown(loopback, port))}"
    )


def _host_addresses() -> dict[str, list[str]]:
    """{interface: [address, ...]} from the machine's profile; IPv6 link-local ones with their %interface scope,
    which binding them needs."""
    import hypermesh

    out: dict[str, list[str]] = {}
    try:
        interfaces = hypermesh.profile().network
    except (OSError, hypermesh.HypermeshError):
        return out
    for nic in interfaces:
        for cidr in nic.addresses:
            address = cidr.partition("/")[0]
            if address.lower().startswith("fe80:"):
                address = f"{address}%{nic.name}"
            out.setdefault(nic.name, []).append(address)
    return out
