"""Network interfaces from /sys/class/net, addresses from one rtnetlink dump.

Addresses come from netlink (RTM_GETADDR) rather than ioctl(SIOCGIFADDR), which sees only one IPv4 address per
interface, or getifaddrs through ctypes, which costs a ctypes import. One dump answers for every interface.
"""

from __future__ import annotations

import os
import socket
import struct

from hypermesh.model import NetworkInterface
from hypermesh.platform.linux.files import listdir, read_int, read_once, read_str

__all__ = ["IFNAMSIZ", "interface_name_problem", "interfaces", "link_up"]

_RTM_GETADDR = 22
_NLMSG_DONE = 3
_NLMSG_ERROR = 2
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_ARPHRD_LOOPBACK = 772
_IFF_UP = 0x1
IFNAMSIZ = 16


def interface_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a Linux interface name, or None: the kernel's dev_valid_name() (at most
    IFNAMSIZ - 1 bytes, not "." or "..", no "/", ":", NUL or whitespace). Whether it exists is checked
    where it is used."""
    if not name:
        return "the interface name is empty; give one, e.g. eth0 (see 'ip link')"
    try:
        size = len(os.fsencode(name))
    except UnicodeEncodeError:  # a lone surrogate a JSON body can carry and no file name can
        return f"{name!r} is not an interface name: it is not valid text"
    if size >= IFNAMSIZ:
        return f"{name!r} is {size} bytes; Linux interface names have at most {IFNAMSIZ - 1} (see 'ip link')"
    if name in (".", "..") or any(c in name for c in "/:\0") or any(c.isspace() for c in name):
        return f"{name!r} is not an interface name: Linux refuses '.', '..', '/', ':', NUL and spaces (see 'ip link')"
    return None


def link_up(flags: str | None, operstate: str | None, carrier: int | None) -> bool:
    """Whether an interface is up: the one rule the profile, /v1/assets and hypermesh_network_up share.

    Up means administratively up (IFF_UP in /sys/class/net/<if>/flags) and able to pass traffic: operstate "up",
    or operstate "unknown" with a carrier (or none to read). "unknown" is what the kernel reports for loopback
    and for every driver that never calls netif_carrier_on/off or sets an RFC 2863 state (lo, many virtual
    links): it does not mean down. Other states (down, lowerlayerdown, dormant, notpresent, testing) are down.
    ``flags`` is the sysfs text ("0x1003"); None when unreadable, then operstate alone decides.
    """
    if flags is not None:
        try:
            if not int(flags, 16) & _IFF_UP:
                return False
        except ValueError:
            pass
    if operstate == "up":
        return True
    # sysfs refuses the carrier read (EINVAL) while the interface is down: None then, and IFF_UP decided that.
    return operstate in ("unknown", None) and carrier != 0 and (flags is not None or carrier == 1)


def netlink_addresses() -> dict[int, list[str]]:
    """{ifindex: ["addr/prefixlen", ...]} for every address the kernel holds, IPv4 before IPv6."""
    out: dict[int, list[str]] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
        sock.sendall(struct.pack("=IHHII4BI", 24, _RTM_GETADDR, _NLM_F_REQUEST_DUMP, 1, 0, 0, 0, 0, 0, 0))
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_type = struct.unpack_from("=IH", data, offset)
                if msg_type == _NLMSG_DONE or length < 16:
                    return out
                if msg_type == _NLMSG_ERROR:
                    return out
                family, prefix, _flags, _scope, index = struct.unpack_from("=4BI", data, offset + 16)
                attrs: dict[int, bytes] = {}
                pos, end = offset + 24, offset + length
                while pos + 4 <= end:
                    alen, atype = struct.unpack_from("=HH", data, pos)
                    if alen < 4:
                        break
                    attrs[atype] = data[pos + 4 : pos + alen]
                    pos += (alen + 3) & ~3
                # For IPv4, IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
                raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
                if raw is not None and family in (socket.AF_INET, socket.AF_INET6):
                    out.setdefault(index, []).append(f"{socket.inet_ntop(family, raw)}/{prefix}")
                offset += (length + 3) & ~3


def _kind(d: str, name: str, arp_type: int | None) -> str:
    if arp_type == _ARPHRD_LOOPBACK or name == "lo":
        return "loopback"
    # Physical NICs have a bus device behind them; veth, bridges, tun, ifb and friends do not.
    return "physical" if os.path.exists(f"{d}/device") else "virtual"


def interfaces(sys_root: str, live: bool) -> list[NetworkInterface]:
    """Every interface; addresses from netlink on a live system, from ``<root>/addresses.json`` in a fixture."""
    base = f"{sys_root}/class/net"
    names = sorted(listdir(base))
    by_name: dict[str, list[str]] = {}
    if live:
        try:
            by_index = netlink_addresses()
        except OSError:
            by_index = {}
        for name in names:
            index = read_int(f"{base}/{name}/ifindex")
            if index is not None:
                by_name[name] = by_index.get(index, [])
    else:
        import json  # fixture trees only: not worth its import on every live profile

        recorded = read_once(f"{os.path.dirname(sys_root)}/addresses.json")
        by_name = json.loads(recorded) if recorded else {}
    out = []
    for name in names:
        d = f"{base}/{name}"
        speed = read_int(f"{d}/speed")
        out.append(
            NetworkInterface(
                name=name,
                mac=read_str(f"{d}/address") or None,
                mtu=read_int(f"{d}/mtu"),
                # speed is -1 or unreadable (EINVAL) when the link is down or does not know (virtual links).
                speed_mbps=speed if speed is not None and speed > 0 else None,
                up=link_up(read_str(f"{d}/flags"), read_str(f"{d}/operstate"), read_int(f"{d}/carrier")),
                kind=_kind(d, name, read_int(f"{d}/type")),
                addresses=tuple(by_name.get(name, [])),
            )
        )
    return out
