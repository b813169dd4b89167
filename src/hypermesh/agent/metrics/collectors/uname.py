"""What runs: the kernel's uname and /etc/os-release as ``_info`` gauges (join on them in PromQL)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["UnameCollector"]

UNAME = gauge("hypermesh_uname_info", "Always 1; labels are the kernel's uname fields.")
OS = gauge("hypermesh_os_info", "Always 1; labels are /etc/os-release fields.")


class UnameCollector:
    area = "uname"
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        uname = UNAME.family()
        uname.add(1.0, **stats.uname)
        families = [uname]
        release = stats.os_release
        if release:
            os_info = OS.family()
            os_info.add(
                1.0,
                id=release.get("ID", ""),
                id_like=release.get("ID_LIKE", ""),
                name=release.get("NAME", ""),
                pretty_name=release.get("PRETTY_NAME", ""),
                version=release.get("VERSION", ""),
                version_codename=release.get("VERSION_CODENAME", ""),
                version_id=release.get("VERSION_ID", ""),
            )
            families.append(os_info)
        return families
