"""The one rule for "is this interface up" (docs/metrics.md, netclass): states the kernel reports, as sysfs gives them."""

from __future__ import annotations

import pytest

from hypermesh.platform.linux.net import link_up


@pytest.mark.parametrize(
    ("flags", "operstate", "carrier", "up"),
    [
        ("0x9", "unknown", 1, True),  # lo: IFF_UP|IFF_LOOPBACK, operstate always "unknown" (no RFC 2863 state)
        ("0x1003", "up", 1, True),  # a NIC with a link
        ("0x1003", "down", 0, False),  # IFF_UP but no carrier (cable out, peer down)
        ("0x1003", "lowerlayerdown", 0, False),  # a VLAN over a link that is down
        ("0x1003", "dormant", 1, False),  # 802.1X not yet authenticated
        ("0x10c1", "unknown", None, True),  # a driver that reports no carrier file: IFF_UP decides
        ("0x1003", "unknown", 0, False),  # unknown state, carrier off: tun with no reader
        ("0x82", "down", None, False),  # ifb0 administratively down: sysfs refuses the carrier read
        ("0x82", "unknown", None, False),  # down by IFF_UP whatever operstate says
        (None, "up", None, True),  # flags unreadable: operstate decides
        (None, "unknown", 1, True),
        (None, "unknown", None, False),  # nothing to tell it by
        (None, None, None, False),
    ],
)
def test_link_up(flags: str | None, operstate: str | None, carrier: int | None, up: bool) -> None:
    assert link_up(flags, operstate, carrier) is up
