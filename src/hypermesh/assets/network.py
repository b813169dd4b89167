"""Network interfaces as assets, in bytes per second of link speed, with the Sampler's rates, errors and drops.

Capacity is the link speed the driver reports (/sys/class/net/IF/speed, Mb/s); virtual links and links that are
down report none (-1 or EINVAL), and their capacity is None: there is nothing to allocate against. Loopback is
not an asset.
"""

from __future__ import annotations

import sys

from hypermesh.assets.base import Context, Reading

__all__ = ["NetworkAdapter"]

_MBPS = 125_000.0  # bytes per second in one Mb/s


def _links(ctx: Context, names: list[str]) -> dict[str, tuple[int | None, bool | None]]:
    """name -> (speed in Mb/s, up): up by the one rule the profile and hypermesh_network_up use."""
    if sys.platform.startswith("linux"):
        from hypermesh.platform.linux.files import read_int, read_str
        from hypermesh.platform.linux.net import link_up

        out: dict[str, tuple[int | None, bool | None]] = {}
        for n in names:
            d = f"{ctx.sys}/class/net/{n}"
            out[n] = (
                read_int(f"{d}/speed"),
                link_up(read_str(f"{d}/flags"), read_str(f"{d}/operstate"), read_int(f"{d}/carrier")),
            )
        return out
    from hypermesh.platform import backend

    return {i.name: (i.speed_mbps, i.up) for i in backend().profile().network}


class NetworkAdapter:
    kind = "network"

    def read(self, ctx: Context) -> list[Reading]:
        sample = ctx.need_sample()
        interfaces = [r for r in sample.network if r.name != "lo"]
        links = _links(ctx, [r.name for r in interfaces])
        out = []
        for rate in interfaces:
            speed, up = links.get(rate.name, (None, None))
            out.append(
                Reading(
                    id=rate.name,
                    unit="bytes_per_s",
                    capacity=speed * _MBPS if speed is not None and speed > 0 else None,
                    usage=rate.rx_bytes_per_s + rate.tx_bytes_per_s,
                    details={
                        "speed_mbps": speed if speed is not None and speed > 0 else None,
                        "up": up,
                        **rate.to_dict(),
                    },
                )
            )
        return out

    def close(self) -> None:
        return None
