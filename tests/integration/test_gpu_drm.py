"""AMD and Intel GPUs from the recorded DRM sysfs/fdinfo trees in tests/fixtures/gpu (see their READMEs).

Expected values are read from the fixture files here with plain pathlib, independently of hypermesh's readers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hypermesh.gpu import GpuReader, fdinfo
from hypermesh.gpu.model import IDENTITY

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gpu"


def value(path: Path) -> str:
    return path.read_text().strip()


def test_amd_card_identity_and_readings() -> None:
    root = FIXTURES / "amd"
    device = root / "sys/class/drm/card0/device"
    reader = GpuReader(sys_root=str(root / "sys"), proc_root=str(root / "proc"))
    gpus = reader.read()
    assert len(gpus) == 1  # card0-DP-1 (connector) and renderD128 (render node) are not cards
    gpu = gpus[0]
    uevent = dict(line.split("=", 1) for line in value(device / "uevent").splitlines())
    assert gpu.identity() == {
        "index": 0,
        "vendor": "amd",
        "model": value(device / "product_name"),
        "uuid": value(device / "unique_id"),
        "pci_bus_id": uevent["PCI_SLOT_NAME"],
        "driver": uevent["DRIVER"],
        "memory_total_bytes": int(value(device / "mem_info_vram_total")),
    }
    assert list(gpu.identity()) == list(IDENTITY)
    assert gpu.memory_used_bytes == int(value(device / "mem_info_vram_used"))
    assert gpu.busy_percent == float(value(device / "gpu_busy_percent"))
    assert gpu.temperature_celsius == int(value(device / "hwmon/hwmon2/temp1_input")) / 1000
    assert gpu.power_watts == int(value(device / "hwmon/hwmon2/power1_average")) / 1e6
    assert (gpu.status, gpu.reason) == ("ok", None)
    assert reader.problems == {}


def test_amd_processes_deduplicated_by_client_id() -> None:
    root = FIXTURES / "amd"
    clients = GpuReader(sys_root=str(root / "sys"), proc_root=str(root / "proc")).processes()
    # 4242 holds client 42 twice (dup) and its child 4250 the same client: once, under the lowest pid
    assert [(c.pid, c.client_id) for c in clients] == [(4242, "42"), (5100, "57")]
    old, new = clients
    assert old.pci_bus_id == new.pci_bus_id == "0000:03:00.0"
    assert old.engines_ns == {"gfx": 1380462451, "compute": 0, "dma": 123456, "dec": 0, "enc": 0}
    assert old.memory_bytes == {"vram": 12288 * 1024, "gtt": 2048 * 1024, "cpu": 0}
    # 6.9+ keys: resident is what occupies the device now, and wins over total
    assert new.memory_bytes == {"vram": 262144 * 1024, "gtt": 4096 * 1024}


def test_intel_identity_only_and_busy_from_fdinfo() -> None:
    root = FIXTURES / "intel"
    device = root / "sys/class/drm/card1/device"
    gpu = GpuReader(sys_root=str(root / "sys")).read()[0]
    assert (gpu.vendor, gpu.driver, gpu.pci_bus_id) == ("intel", "i915", "0000:00:02.0")
    assert gpu.uuid == gpu.pci_bus_id  # i915 has no unique id: the PCI address stands in
    assert gpu.model == "INTEL [8086:4680]" and value(device / "vendor") == "0x8086"
    assert gpu.memory_total_bytes is None and gpu.busy_percent is None and gpu.status == "ok"

    busy = fdinfo.EngineBusy()
    first = fdinfo.scan(str(root / "proc-t0"))
    assert busy.update(first, now=100.0) == {}  # a baseline, never a fake 0
    second = fdinfo.scan(str(root / "proc-t1"))
    got = busy.update(second, now=101.0)
    # client 7: +300 ms render (30 %) and +1.2 s video on two video engines (60 %): the busiest class, 60 %.
    # Client 9's render counter stepped back and is held (adds 0, not -100 ms).
    assert got == {"0000:00:02.0": 60.0}
    assert {c.client_id: c.engine_capacity for c in second} == {"7": {"video": 2}, "9": {"video": 2}}
    third = busy.update(second, now=102.0)
    assert third == {"0000:00:02.0": 0.0}  # held at the max: stepping back again later adds nothing either
    engines = {c.client_id: c.engines_ns for c in second}
    assert engines["7"]["video-enhance"] == 0 and "capacity-video" not in engines["7"]
    assert {c.client_id: c.memory_bytes for c in second}["7"] == {"system0": 54 << 20}


def test_unreadable_attribute_degrades_only_that_card(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    shutil.copytree(FIXTURES / "amd/sys", sys_root, symlinks=True)
    shutil.copytree(FIXTURES / "intel/sys/class/drm/card1", sys_root / "class/drm/card1", symlinks=True)
    busy = sys_root / "class/drm/card0/device/gpu_busy_percent"
    busy.write_text("garbage\n")  # a driver answering something that is not a number
    os.chmod(sys_root / "class/drm/card0/device/mem_info_vram_used", 0)
    gpus = GpuReader(sys_root=str(sys_root)).read()
    assert [g.vendor for g in gpus] == ["amd", "intel"] and [g.index for g in gpus] == [0, 1]
    amd, intel = gpus
    assert amd.status == "degraded" and amd.busy_percent is None
    assert "gpu_busy_percent could not be read" in (amd.reason or "")
    if os.geteuid() != 0:  # root reads a mode-0 file anyway; the garbage value is the part that always fails
        assert "mem_info_vram_used" in (amd.reason or "")
    assert amd.memory_total_bytes == 17163091968  # what still reads is still reported
    assert (intel.status, intel.reason) == ("ok", None)


def test_headless_tree_has_no_gpus(tmp_path: Path) -> None:
    (tmp_path / "sys/class").mkdir(parents=True)  # no drm class at all, as on this machine
    reader = GpuReader(sys_root=str(tmp_path / "sys"), proc_root=str(tmp_path / "proc"))
    assert reader.read() == [] and reader.processes() == [] and reader.problems == {}


def test_headless_live_host() -> None:
    """This machine has no GPU (PLATFORM-NOTES): zero GPUs, no problem reported, never an error."""
    import hypermesh

    has_drm = any(
        name.startswith("card") for name in (os.listdir("/sys/class/drm") if os.path.isdir("/sys/class/drm") else [])
    )
    has_nvidia = os.path.isdir("/sys/module/nvidia")
    reader = GpuReader()
    gpus = reader.read()
    if not has_drm and not has_nvidia:
        assert gpus == [] and reader.problems == {}
        assert hypermesh.profile().gpus == ()
    else:
        assert tuple(g.identity() for g in gpus) == hypermesh.profile().gpus
    reader.close()


def test_drm_fd_is_told_by_the_device_major(tmp_path: Path) -> None:
    """Live /proc: our own fds are not DRM devices (major 226); a link to /dev/dri/ that cannot be reached is."""
    fds = os.listdir("/proc/self/fd")
    assert fds and not any(fdinfo.is_drm_fd(f"/proc/self/fd/{fd}") for fd in fds)
    (tmp_path / "3").symlink_to("/dev/dri/renderD999")
    (tmp_path / "4").symlink_to("/dev/null")
    assert fdinfo.is_drm_fd(str(tmp_path / "3")) and not fdinfo.is_drm_fd(str(tmp_path / "4"))
