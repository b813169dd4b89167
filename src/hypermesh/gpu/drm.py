"""AMD and Intel GPUs through DRM sysfs: /sys/class/drm/cardN/device (Documentation/gpu/amdgpu/).

Only ``cardN`` entries are cards; ``cardN-DP-1`` and friends are its connectors and ``renderD128`` is the render
node of a card already listed. The PCI function is ``device/``: its ``uevent`` carries PCI_SLOT_NAME and DRIVER
(plain text, so a recorded tree needs no symlinks), ``vendor`` the PCI vendor id.

amdgpu exposes ``gpu_busy_percent`` (since 4.19), ``mem_info_vram_total``/``mem_info_vram_used`` (bytes),
``product_name`` (5.9+, empty on many boards), ``unique_id`` (Vega20 and newer), and a hwmon directory with
``temp1_input`` (millidegrees C) and ``power1_average`` (µW; ``power1_input`` on newer SMU firmware).
i915 and xe have none of these: identity only here; busyness comes from DRM fdinfo (fdinfo.py).
"""

from __future__ import annotations

import os

from hypermesh.gpu.model import GpuReading
from hypermesh.platform.linux.files import listdir, read_once, read_str

__all__ = ["read_cards"]

VENDORS = {"0x1002": "amd", "0x8086": "intel", "0x10de": "nvidia"}


def _uevent(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


class _Unreadable(Exception):
    """A sysfs attribute that exists but could not be read or parsed: the card is degraded, not gone."""


def _number(path: str, problems: list[str]) -> int | None:
    """An integer attribute; None when absent (the driver has none); a problem noted when present but unreadable."""
    if not os.path.exists(path):
        return None
    data = read_once(path)
    try:
        if data is None:
            raise _Unreadable
        return int(data.strip())
    except (ValueError, _Unreadable):
        problems.append(f"{path} could not be read")
        return None


def _hwmon(device: str) -> str | None:
    names = sorted(listdir(f"{device}/hwmon"))
    return f"{device}/hwmon/{names[0]}" if names else None


def cards(sys_root: str = "/sys") -> list[str]:
    """Card directories under <sys>/class/drm in card-number order."""
    base = f"{sys_root}/class/drm"
    # plain string tests, not a regex: `re` would add ~3 ms to every `hypermesh profile` for one directory listing
    found = [(int(name[4:]), name) for name in listdir(base) if name.startswith("card") and name[4:].isdigit()]
    return [f"{base}/{name}" for _n, name in sorted(found)]


def read_card(card: str, index: int) -> GpuReading:
    """One card's identity and readings. An attribute that exists but fails to read makes the card degraded."""
    device = f"{card}/device"
    problems: list[str] = []
    vendor_id = (read_str(f"{device}/vendor") or "").lower()
    uevent = _uevent(read_str(f"{device}/uevent"))
    pci = uevent.get("PCI_SLOT_NAME") or os.path.basename(os.path.realpath(device))
    driver = uevent.get("DRIVER") or _link_name(f"{device}/driver")
    vendor = VENDORS.get(vendor_id, vendor_id or "unknown")
    pci_id = uevent.get("PCI_ID", "").lower()
    model = read_str(f"{device}/product_name") or f"{vendor.upper() if vendor != 'unknown' else 'GPU'} [{pci_id}]"
    unique = read_str(f"{device}/unique_id")
    total = _number(f"{device}/mem_info_vram_total", problems)
    used = _number(f"{device}/mem_info_vram_used", problems)
    busy = _number(f"{device}/gpu_busy_percent", problems)
    temperature = power = None
    hwmon = _hwmon(device)
    if hwmon is not None:
        millideg = _number(f"{hwmon}/temp1_input", problems)
        temperature = None if millideg is None else millideg / 1000.0
        microwatts = _number(f"{hwmon}/power1_average", problems)
        if microwatts is None:
            microwatts = _number(f"{hwmon}/power1_input", problems)
        power = None if microwatts is None else microwatts / 1e6
    if not vendor_id:
        problems.append(f"{device}/vendor could not be read")
    return GpuReading(
        index=index,
        vendor=vendor,
        model=model,
        uuid=unique or pci,
        pci_bus_id=pci,
        driver=driver,
        memory_total_bytes=total,
        memory_used_bytes=used,
        busy_percent=None if busy is None else float(busy),
        temperature_celsius=temperature,
        power_watts=power,
        status="degraded" if problems else "ok",
        reason="; ".join(problems) or None,
    )


def _link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def read_cards(
    sys_root: str = "/sys", first_index: int = 0, skip_vendors: frozenset[str] = frozenset()
) -> list[GpuReading]:
    """Every DRM card but those of ``skip_vendors`` (PCI vendor ids like "0x10de", read elsewhere)."""
    out: list[GpuReading] = []
    for card in cards(sys_root):
        if (read_str(f"{card}/device/vendor") or "").lower() in skip_vendors:
            continue
        out.append(read_card(card, first_index + len(out)))
    return out
