"""The native Linux backend: procfs, sysfs and cgroupfs read directly.

``LinuxBackend(root="/")`` reads ``<root>/proc``, ``<root>/sys`` and ``<root>/etc``; tests point ``root`` at a
recorded fixture tree. Only a live root ("/") talks to the kernel beyond files (netlink addresses, statvfs).
"""

from __future__ import annotations

import os
import select
import time

from hypermesh import gpu as gpu_layer
from hypermesh.errors import BackendError
from hypermesh.model import CpuFrequency, CpuInfo, MemoryInfo, OsInfo, StorageDevice, SystemProfile
from hypermesh.platform.base import RawCounters, assemble_profile
from hypermesh.platform.linux import block, cgroup, files, identity, net, procfs, procnet, sysfs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.model_node import NodeStats

__all__ = ["LinuxBackend", "LinuxCounterReader"]


class LinuxBackend:
    name = "linux"
    cpu_times_source = "proc_stat"

    def __init__(self, root: str = "/", *, proc: str | None = None, sys: str | None = None) -> None:
        """``root`` prefixes /proc, /sys and /etc; ``proc``/``sys`` point one of them elsewhere (a later snapshot)."""
        root = root.rstrip("/")
        self.root = root
        self.live = root == "" and proc is None and sys is None
        self.proc = proc or f"{root}/proc"
        self.sys = sys or f"{root}/sys"
        self.etc = f"{root}/etc"

    def __repr__(self) -> str:
        return f"LinuxBackend(root={self.root or '/'!r})"

    # ------------------------------------------------------------------------------------ profile

    def profile(self) -> SystemProfile:
        return assemble_profile(
            os=self._os,
            cpu=self._cpu,
            memory=self._memory,
            storage=self._storage,
            network=lambda: net.interfaces(self.sys, self.live),
            limits=lambda: cgroup.limits(self.proc, self.sys),
            gpus=lambda: gpu_layer.identities(self.sys, self.proc),
            where=self.root or "/",
        )

    def _storage(self) -> list[StorageDevice]:
        mountinfo = (files.read_to_end(f"{self.proc}/self/mountinfo") or b"").decode(errors="surrogateescape")
        return block.storage_devices(self.sys, mountinfo, "" if self.live else None)

    def _os(self) -> OsInfo:
        kernel = f"{self.proc}/sys/kernel"
        release = files.read_str(f"{kernel}/osrelease") or ""
        os_release = identity.os_release(self.root)
        stat = files.read_to_end(f"{self.proc}/stat") or b""
        return OsInfo(
            system="Linux",
            release=release,
            kernel=files.read_str(f"{kernel}/version") or release,
            distribution=os_release.get("PRETTY_NAME") or os_release.get("NAME"),
            architecture=identity.machine(self.root, self.live),
            hostname=files.read_str(f"{kernel}/hostname") or "",
            boot_time=procfs.parse_stat_btime(stat),
        )

    def _cpu(self) -> CpuInfo:
        cpus = sysfs.online_cpus(self.sys)
        if not cpus:
            raise BackendError(f"no CPUs found under {self.sys}/devices/system/cpu: is sysfs mounted?")
        info = procfs.parse_cpuinfo(files.read_str(f"{self.proc}/cpuinfo") or "")
        physical, sockets, threads_per_core = sysfs.topology(self.sys, cpus)
        fmin, fmax, fcur = sysfs.frequency_khz(self.sys, cpus[0])
        current = fcur / 1000 if fcur else _float(info.get("cpu MHz"))
        return CpuInfo(
            # x86 says vendor_id/model name; arm64 says CPU implementer and has no model name.
            vendor=info.get("vendor_id") or info.get("CPU implementer"),
            model=info.get("model name") or info.get("Model") or info.get("cpu model") or info.get("Hardware"),
            architecture=identity.machine(self.root, self.live),
            logical_cores=len(cpus),
            physical_cores=physical,
            sockets=sockets,
            threads_per_core=threads_per_core,
            frequency_mhz=CpuFrequency(
                min=fmin / 1000 if fmin else None, max=fmax / 1000 if fmax else None, current=current
            ),
            caches=tuple(sysfs.caches(self.sys, cpus)),
            numa_nodes=tuple(sysfs.numa_nodes(self.sys)),
            core_types=tuple(sysfs.core_types(self.sys, cpus)),
            flags=tuple((info.get("flags") or info.get("Features") or "").split()),
        )

    def _memory(self) -> MemoryInfo:
        meminfo = procfs.parse_meminfo(files.read_to_end(f"{self.proc}/meminfo") or b"")
        if "MemTotal" not in meminfo:
            raise BackendError(f"{self.proc}/meminfo has no MemTotal: is procfs mounted?")
        return MemoryInfo(
            total_bytes=meminfo["MemTotal"],
            swap_total_bytes=meminfo.get("SwapTotal"),
            hugepage_size_bytes=meminfo.get("Hugepagesize"),
        )

    # ----------------------------------------------------------------------------------- counters

    def node_stats(self) -> NodeStats:
        """The node's other kernel statistics (nodestats.py); files opened once, never on the sampling hot path."""
        reader = getattr(self, "_node_stats_reader", None)
        if reader is None:
            from hypermesh.platform.linux.nodestats import NodeStatsReader

            reader = self._node_stats_reader = NodeStatsReader(self.proc, self.sys, self.root, self.live)
        return reader.read()

    def node_stats_unreadable(self) -> dict[str, str]:
        reader = getattr(self, "_node_stats_reader", None)
        return dict(reader.unreadable) if reader is not None else {}

    def node_stats_may_block(self) -> bool:
        reader = getattr(self, "_node_stats_reader", None)
        return True if reader is None else reader.may_block

    def counter_reader(self) -> LinuxCounterReader:
        return LinuxCounterReader(self)


def _net_dev_counters_line(line: bytes) -> tuple[str, tuple[int, ...]] | None:
    return procnet.parse_net_dev_line(line, procnet.net_dev_counters)


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


class LinuxCounterReader:
    """Reads every counter through file descriptors kept open and re-read with pread(2) from offset 0.

    procfs seq_files and sysfs attributes regenerate their content on a read at offset 0, so one open per file
    for the reader's life saves the open/close pair (about half the cost of a read) on every sample.
    Not thread-safe on its own: the Sampler serialises reads.

    ``unreadable`` names the optional sources that exist on every Linux (or exist here) but could not be opened,
    ``{"diskstats": "/proc/diskstats: Permission denied"}``: their part of a sample is then empty, and a caller that
    must tell "no devices" from "could not look" (the agent's per-collector success) asks here.
    """

    def __init__(self, backend: LinuxBackend) -> None:
        self._backend = backend
        self._fds: list[int] = []
        self.unreadable: dict[str, str] = {}
        proc = backend.proc
        self._stat = self._open_required(f"{proc}/stat")
        self._meminfo = self._open_required(f"{proc}/meminfo")
        self._loadavg = self._open_required(f"{proc}/loadavg")
        # In every kernel since 2.6: missing or unreadable is a fault here (permissions, a broken --root).
        self._diskstats = self._open(f"{proc}/diskstats", source="diskstats")
        self._netdev = self._open(f"{proc}/net/dev", source="net/dev")
        # PSI exists since 4.20 and can be disabled at boot (psi=0): the file is then absent or unreadable. Absent
        # is "this kernel has none"; present and refused (permissions) is a fault.
        self._psi = self._open(f"{proc}/pressure/memory", source="pressure/memory", absent_ok=True)
        if self._psi is not None and procfs.parse_pressure(self._pread(self._psi)) is None:
            self._psi = None
        self._disk_lines = -1
        self._disk_names: frozenset[bytes] = frozenset()
        # Which devices we keep depends on the mounts too (a loop device counts once mounted), and loop0..7 stay
        # in /proc/diskstats whether attached or not: poll(2) on mountinfo says POLLPRI when the mount table
        # changed (fs/proc_namespace.c mounts_poll), for a fraction of a microsecond per sample.
        self._mounts_poll: select.poll | None = None
        mounts_fd = self._open(f"{proc}/self/mountinfo")
        if mounts_fd is not None:
            self._mounts_poll = select.poll()
            self._mounts_poll.register(mounts_fd, select.POLLPRI)
        self._disk_memo: procfs.LineMemo[str, tuple[int, ...]] = procfs.LineMemo()
        self._net_memo: procfs.LineMemo[str, tuple[int, ...]] = procfs.LineMemo()
        self._cpu_memo: procfs.LineMemo[int, tuple[float, ...]] = procfs.LineMemo()
        # Finer than /proc/stat's 10 ms ticks: schedstat run time (ns) where the kernel has CONFIG_SCHEDSTATS,
        # else cpuidle residency (µs) where a cpuidle driver runs, else /proc/stat alone.
        self.fine_kind: str | None = None
        self._idle_fds: list[tuple[int, list[int]]] = []
        self._schedstat = self._open(f"{proc}/schedstat")
        if self._schedstat is not None and procfs.parse_schedstat(self._pread(self._schedstat)):
            self.fine_kind = "schedstat"
        else:
            try:
                cpus = sorted(procfs.parse_stat_cpus(self._pread(self._stat)))
            except (ValueError, IndexError) as exc:
                raise BackendError(f"{proc}/stat: unexpected content ({exc})") from exc
            self._open_cpuidle(cpus)

    def _open_cpuidle(self, cpus: list[int]) -> None:
        for _cpu, fds in self._idle_fds:  # CPU hot-plug: drop the previous set first
            for fd in fds:
                self._fds.remove(fd)
                os.close(fd)
        self._idle_fds = []
        self.fine_kind = None
        for cpu, paths in sysfs.cpuidle_time_paths(self._backend.sys, cpus).items():
            fds = [fd for fd in (self._open(p) for p in paths) if fd is not None]
            self._idle_fds.append((cpu, fds))
            if len(fds) != len(paths):
                return self._open_cpuidle([])  # a state we cannot read would bias every sample: use /proc/stat
        if self._idle_fds:
            self.fine_kind = "cpuidle"
        return None

    def _disks(self) -> dict[str, tuple[int, ...]]:
        if self._diskstats is None:
            return {}
        data = self._pread(self._diskstats)
        lines = data.count(b"\n")
        if lines != self._disk_lines or (self._mounts_poll is not None and self._mounts_poll.poll(0)):
            # A device came or went (hot-plug), or something was mounted or unmounted (a loop device put to use):
            # recompute which lines we keep.
            mountinfo = (files.read_to_end(f"{self._backend.proc}/self/mountinfo") or b"").decode(
                errors="surrogateescape"
            )
            self._disk_names = block.sample_disk_names(self._backend.sys, mountinfo)
            self._disk_lines = lines
            self._disk_memo = procfs.LineMemo()
        wanted = self._disk_names
        counters = procfs.diskstats_counters
        return self._disk_memo.parse(
            data.split(b"\n"), lambda line: procfs.parse_diskstats_line(line, wanted, counters)
        )

    def _open(self, path: str, source: str | None = None, absent_ok: bool = False) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if source is not None and not (absent_ok and isinstance(exc, FileNotFoundError)):
                self.unreadable[source] = f"{path}: {exc.strerror or exc}"
            return None
        self._fds.append(fd)
        return fd

    def _open_required(self, path: str) -> int:
        fd = self._open(path)
        if fd is None:
            raise BackendError(f"cannot read {path}; is procfs mounted and readable?")
        return fd

    _pread = staticmethod(files.pread_to_end)

    def read(self) -> RawCounters:
        try:
            return self._read()
        except (ValueError, IndexError, KeyError) as exc:
            # Kernel files do not change format between two reads; find which one did not parse, off the hot path.
            raise BackendError(f"{self._unparsable() or 'a counter file'}: unexpected content ({exc})") from exc

    def _unparsable(self) -> str | None:
        proc = self._backend.proc
        checks = (
            ("stat", lambda d: [procfs.parse_stat_cpu_line(x) for x in procfs.stat_cpu_lines(d)]),
            ("meminfo", procfs.parse_meminfo_sample),
            ("pressure/memory", procfs.parse_pressure),
            ("diskstats", lambda d: procfs.parse_diskstats(d, procfs.diskstats_counters)),
            ("net/dev", lambda d: procnet.parse_net_dev(d, procnet.net_dev_counters)),
            ("loadavg", procfs.parse_loadavg),
        )
        for name, parse in checks:
            data = files.read_to_end(f"{proc}/{name}")
            try:
                if data is not None:
                    parse(data)
            except (ValueError, IndexError, KeyError):
                return f"{proc}/{name}"
        return None

    def _read(self) -> RawCounters:
        pread = self._pread
        mono = time.monotonic()
        wall = time.time()
        cpu = self._cpu_memo.parse(procfs.stat_cpu_lines(pread(self._stat)), procfs.parse_stat_cpu_line)
        fine: dict[int, tuple[float, int]] | None = None
        if self.fine_kind == "cpuidle":
            if len(cpu) != len(self._idle_fds):
                self._open_cpuidle(sorted(cpu))  # a CPU went offline or came back online
            fine = {}
            pread_idle = os.pread
            for c, fds in self._idle_fds:  # plain loops: a generator per CPU cost a fifth more
                idle_us = 0
                for fd in fds:
                    idle_us += int(pread_idle(fd, 32, 0))
                fine[c] = (idle_us / 1e6, 0)
        elif self.fine_kind == "schedstat" and self._schedstat is not None:
            fine = {c: (busy, 0) for c, busy in procfs.parse_schedstat(pread(self._schedstat)).items()}
        return RawCounters(
            monotonic=mono,
            wall=wall,
            cpu=cpu,
            fine_kind=self.fine_kind,
            fine=fine,
            memory=procfs.parse_meminfo_sample(pread(self._meminfo)),
            pressure=procfs.parse_pressure(pread(self._psi)) if self._psi is not None else None,
            disks=self._disks(),
            network=self._net_memo.parse(pread(self._netdev).split(b"\n"), _net_dev_counters_line)
            if self._netdev is not None
            else {},
            load=procfs.parse_loadavg(pread(self._loadavg)),
        )

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __del__(self) -> None:
        self.close()
