"""Pure parsers for /proc/net/*: bytes in, typed values out, no I/O.

Interface names are bytes to the kernel (anything but "/", ":" and whitespace): every parser here decodes them as
os.listdir decodes /sys/class/net, so an interface has one name in the profile, the sample and /metrics, and a
name that is not UTF-8 is that name, not an error.
"""

from __future__ import annotations

from hypermesh.platform.linux.procfs import PAGE_BYTES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

__all__ = [
    "net_dev_all",
    "net_dev_counters",
    "parse_arp",
    "parse_net_dev",
    "parse_net_dev_line",
    "parse_snmp",
    "parse_snmp6",
    "parse_sockstat",
    "parse_softnet",
]

# The 16 columns of a /proc/net/dev line, in order (net/core/net-procfs.c dev_seq_printf_stats).
NET_DEV_COLUMNS = (
    "receive_bytes",
    "receive_packets",
    "receive_errors",
    "receive_drops",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errors",
    "transmit_drops",
    "transmit_fifo",
    "transmit_collisions",
    "transmit_carrier",
    "transmit_compressed",
)


def parse_net_dev_line(line: bytes, columns: Callable[[list[bytes]], T]) -> tuple[str, T] | None:
    """(interface, ``columns`` of its 16 numbers) for one /proc/net/dev line; None for the two header lines.

    net/core/net-procfs.c: "name: 8 receive columns 8 transmit columns". The name may be glued to the first
    number when the counter is wide ("eth0:123"), so split on the colon first.
    """
    name, sep, rest = line.partition(b":")
    if not sep:
        return None
    f = rest.split()
    if len(f) < 16:
        return None
    return name.strip().decode(errors="surrogateescape"), columns(f)


def net_dev_counters(f: list[bytes]) -> tuple[int, ...]:
    """The Sampler's columns: (rx_bytes, rx_packets, rx_errors, rx_drops, tx_bytes, tx_packets, tx_errors, tx_drops)."""
    return (
        int(f[0]),
        int(f[1]),
        int(f[2]),
        int(f[3]),
        int(f[8]),
        int(f[9]),
        int(f[10]),
        int(f[11]),
    )


def net_dev_all(f: list[bytes]) -> dict[str, int]:
    """All 16 columns by NET_DEV_COLUMNS name."""
    return dict(zip(NET_DEV_COLUMNS, map(int, f), strict=False))


def parse_net_dev(data: bytes, columns: Callable[[list[bytes]], T]) -> dict[str, T]:
    """Every interface of /proc/net/dev: see parse_net_dev_line."""
    return dict(p for line in data.split(b"\n")[2:] if (p := parse_net_dev_line(line, columns)) is not None)


def parse_softnet(data: bytes) -> dict[int, list[int]]:
    """{cpu: [processed, dropped, time_squeeze]} from /proc/net/softnet_stat (net/core/net-procfs.c).

    Hexadecimal columns, one row per online CPU; kernels since 5.10 put the CPU id in column 13, older ones
    list online CPUs in order, so the row number stands in for it.
    """
    out: dict[int, list[int]] = {}
    for row, line in enumerate(data.split(b"\n")):
        parts = line.split()
        if len(parts) < 3:
            continue
        cpu = int(parts[12], 16) if len(parts) >= 13 else row
        out[cpu] = [int(parts[0], 16), int(parts[1], 16), int(parts[2], 16)]
    return out


def parse_snmp(data: bytes) -> dict[str, dict[str, int]]:
    """{protocol: {field: value}} from /proc/net/snmp and /proc/net/netstat (net/ipv4/proc.c).

    Each protocol is a pair of lines, ``Proto: names...`` then ``Proto: values...``. Values are signed
    (Tcp MaxConn is -1).
    """
    out: dict[str, dict[str, int]] = {}
    lines = data.split(b"\n")
    for names, values in zip(lines[0::2], lines[1::2], strict=False):
        proto, _, header = names.partition(b":")
        vproto, _, numbers = values.partition(b":")
        if not header or proto != vproto:
            continue
        decoded = _HEADERS.get(names)
        if decoded is None:
            decoded = [n.decode() for n in header.split()]
            if len(_HEADERS) < 64:  # a kernel has ~10 header lines; the bound guards against garbage
                _HEADERS[names] = decoded
        fields = out.setdefault(proto.decode(), {})
        for name, number in zip(decoded, numbers.split(), strict=False):
            fields[name] = int(number)
    return out


# Header lines of /proc/net/snmp and netstat never change while the kernel runs: decode each once.
_HEADERS: dict[bytes, list[str]] = {}


_SNMP6_PROTOCOLS = frozenset(("Ip6", "Icmp6", "UdpLite6", "Udp6"))


def parse_snmp6(data: bytes) -> dict[str, dict[str, int]]:
    """{protocol: {field: value}} from /proc/net/snmp6 (net/ipv6/proc.c): ``Ip6InReceives  55`` lines."""
    words = data.split()
    names = words[0::2]
    cached = _SNMP6_NAMES.get(len(names))
    if cached is None or cached[0] != names:
        # Ip6..., Icmp6..., Udp6..., UdpLite6...: the protocol ends at the first "6". The kernel prints the same
        # names in the same order every time, so they are split once.
        split = []
        for name in names:
            six = name.find(b"6") + 1
            split.append((name[:six].decode(), name[six:].decode()))
        cached = _SNMP6_NAMES[len(names)] = (names, split)
    out: dict[str, dict[str, int]] = {}
    for (proto, field), value in zip(cached[1], words[1::2], strict=False):
        if proto in _SNMP6_PROTOCOLS:
            fields = out.get(proto)
            if fields is None:
                fields = out[proto] = {}
            fields[field] = int(value)
    return out


_SNMP6_NAMES: dict[int, tuple[list[bytes], list[tuple[str, str]]]] = {}


def parse_sockstat(data: bytes) -> dict[str, dict[str, int]]:
    """{protocol: {field: value}} from /proc/net/sockstat(6) (net/ipv4/proc.c sockstat_seq_show).

    ``mem`` of TCP/UDP counts pages and becomes ``mem_bytes``; FRAG ``memory`` is already bytes.
    ``sockets: used N`` becomes {"sockets": {"used": N}}.
    """
    out: dict[str, dict[str, int]] = {}
    for line in data.split(b"\n"):
        proto, _, rest = line.partition(b":")
        parts = rest.split()
        if not parts:
            continue
        fields = out.setdefault(proto.decode(), {})
        for key, value in zip(parts[0::2], parts[1::2], strict=False):
            if key == b"mem":
                fields["mem_bytes"] = int(value) * PAGE_BYTES
            else:
                fields[key.decode()] = int(value)
    return out


def parse_arp(data: bytes) -> dict[str, int]:
    """{interface: neighbour entries} from /proc/net/arp (net/ipv4/arp.c): header, then one row per entry."""
    out: dict[str, int] = {}
    for line in data.split(b"\n")[1:]:
        parts = line.split()
        if len(parts) >= 6:
            name = parts[5].decode(errors="surrogateescape")
            out[name] = out.get(name, 0) + 1
    return out
