"""The base of the built-in programs: one owner for a loaded collection and its links.

``hypermesh.ebpf.load(name)`` returns a ``Program``: loaded (``ObjectSpec.load()`` gives it a
``Collection``), then attached (``Link`` s), then closed, which closes the links and the collection.
Everything it loaded has that one owner; nothing stays in the kernel unless pinned (``pin()``).

``close(wait=False)`` hands the links to the background detach thread (``link.detach_later``) and
returns at once with a ``threading.Event``: detaching waits for the kernel's RCU grace period.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref

from hypermesh.ebpf.btf import minimised_btf
from hypermesh.ebpf.link import Link, detach_later
from hypermesh.ebpf.object import Collection, ObjectSpec
from hypermesh.ebpf.pin import PIN_ROOT, make_pin_dir, remove_pin_dir, require_bpffs
from hypermesh.ebpf.probe import check_capabilities
from hypermesh.errors import BackendError, InvalidInput, VerifierError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

    from hypermesh.model import Record

__all__ = ["Program", "close_all"]

_live: weakref.WeakSet[Program] = weakref.WeakSet()
_checked_objects: set[str] = set()
_PROGRAMS_DIR = os.path.join(os.path.dirname(__file__), "programs")


class Program:
    """Base of the built-in programs: ``with load("syscalls") as prog: prog.attach(); prog.read()``.

    Subclasses set ``name`` and ``capabilities`` and implement ``_attach()`` and ``read()``.
    ``read()`` is thread-safe; ``close()`` is idempotent. A subclass whose object has CO-RE relocations
    sets ``co_re``: it loads against a minimised copy of the kernel's BTF (``hypermesh.ebpf.btf``)
    unless ``minimise_btf`` is False.
    """

    name = ""
    capabilities: tuple[str, ...] = ("CAP_BPF", "CAP_PERFMON")
    co_re = False

    def __init__(self) -> None:
        self.minimise_btf = True
        self.collection: Collection | None = None
        self.links: list[Link] = []
        self.pinned_at: str | None = None
        self._read_lock = threading.Lock()

    @property
    def object_path(self) -> str:
        return f"{_PROGRAMS_DIR}/{self.name}.bpf.o"

    # -- lifecycle

    def load(self) -> Self:
        check_capabilities(self.capabilities, what=f"the {self.name} eBPF program")
        btf = self._btf_custom_path()
        try:
            self._load_object(btf)
        except (BackendError, VerifierError):
            if btf is None:
                raise
            # A custom BTF (execsnoop's cached minimised one) libbpf cannot use, truncated or corrupt:
            # it failed to parse ("failed to parse target BTF"), or parsed without the types the
            # relocations need (the verifier then rejects the poisoned instructions). Try what the
            # subclass offers instead, ending with the kernel's full BTF.
            last: BaseException | None = None
            for fallback in self._btf_fallbacks(btf):
                try:
                    self._load_object(fallback)
                    break
                except (BackendError, VerifierError) as exc:
                    last = exc
            else:
                raise last or BackendError(f"loading {self.name} failed") from None
        _live.add(self)
        return self

    def _load_object(self, btf_custom_path: str | None) -> None:
        path = self.object_path
        # A built-in object's ELF header is checked at its first load in the process (it does not
        # change under a running process; should it, libbpf's own error still names the file).
        with ObjectSpec(path, btf_custom_path=btf_custom_path, check=path not in _checked_objects) as spec:
            _checked_objects.add(path)
            self._configure(spec)
            collection = spec.load()
        try:
            self.collection = collection
            self._after_load(collection)
        except BaseException:
            collection.close()
            self.collection = None
            raise

    def attach(self) -> Self:
        """Attach to the program's hooks; on any failure, what was attached is detached again."""
        collection = self._require_loaded()
        if self.links:
            return self
        try:
            self.links = self._attach(collection)
        except BaseException:
            self._close_links()
            raise
        return self

    def close(self, wait: bool = True) -> threading.Event:
        """Detach and unload. ``wait=False`` returns at once and detaches in a background thread
        (the returned Event is set when done): use it from an event loop or a signal path."""
        with self._read_lock:  # a read() in another thread finishes before the maps' fds go
            links, self.links = self.links, []
            collection, self.collection = self.collection, None
        _live.discard(self)
        if not wait and (links or collection is not None):
            return detach_later(links, None if collection is None else collection.close)
        for link in links:
            link.close()
        if collection is not None:
            collection.close()
        done = threading.Event()
        done.set()
        return done

    @property
    def attached(self) -> bool:
        return bool(self.links)

    def __enter__(self) -> Self:
        if self.collection is None:
            self.load()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Last resort for a Program dropped without close(). At interpreter exit the modules it needs
        # may be gone, and the kernel frees everything with the process's fds anyway.
        if sys.is_finalizing():
            return
        if getattr(self, "collection", None) is not None or getattr(self, "links", None):
            self.close()

    # -- pinning

    @property
    def pin_name(self) -> str:
        """The directory under /sys/fs/bpf/hypermesh/ that ``pin()`` uses (and ``detach`` takes)."""
        return self.name

    def check_pin_free(self) -> str:
        """The pin directory ``pin()`` would use; InvalidInput when something is pinned there already
        (worth knowing before the attach: for XDP the pinned program occupies the interface)."""
        require_bpffs("pinning")
        path = os.path.join(PIN_ROOT, self.pin_name)
        if os.path.exists(path):
            raise InvalidInput(
                f"{self.pin_name} is already pinned at {path}: 'hypermesh ebpf detach {self.pin_name}' first"
            )
        return path

    def pin(self) -> str:
        """Pin links and maps under /sys/fs/bpf/hypermesh/<pin_name>/: they outlive this process until
        ``hypermesh ebpf detach <pin_name>`` removes them."""
        collection = self._require_loaded()
        if not self.links:
            raise InvalidInput(
                f"attach {self.name} before pinning it: a pinned program that is not attached does nothing"
            )
        self.check_pin_free()
        path = make_pin_dir(self.pin_name, self.name)
        try:
            for i, link in enumerate(self.links):
                link.pin(os.path.join(path, f"link-{i}-{link.kind}"))
            for name, m in collection.maps.items():
                if m.pinnable:
                    m.pin(os.path.join(path, f"map-{name}"))
        except BaseException:
            remove_pin_dir(path)
            raise
        self.pinned_at = path
        return path

    def unpin(self) -> None:
        """Remove what ``pin()`` pinned: the program then lives only as long as this process holds it."""
        path, self.pinned_at = self.pinned_at, None
        if path is None:
            return
        for link in self.links:
            link.unpin()
        if self.collection is not None:
            for m in self.collection.maps.values():
                m.unpin()
        remove_pin_dir(path)  # the directory, and whatever outlived this process's objects in it

    # -- for subclasses

    def lost_events(self) -> dict[str, int]:
        """Events each of the program's ring buffers dropped since the load because it was full (the
        reader fell behind), by ring buffer map name; {} for a program without one. What the CLI's
        --json and the agent export."""
        return {}

    def _btf_custom_path(self) -> str | None:
        if not (self.co_re and self.minimise_btf):
            return None
        return minimised_btf(self.object_path)

    def _btf_fallbacks(self, failed: str) -> list[str | None]:
        """BTF paths to try, in order, after a load with ``failed`` as btf_custom_path failed
        (None: the kernel's own vmlinux BTF)."""
        if not self.co_re:
            return [None]
        # The cached minimised BTF did not load although its header looked whole (corrupt inside, or
        # made from other types): make it again for the next loads, and use the full BTF should the
        # new one fail too.
        rebuilt = minimised_btf(self.object_path, rebuild=True)
        return [rebuilt, None] if rebuilt is not None else [None]

    def _configure(self, spec: ObjectSpec) -> None:
        """Before load: choose which programs autoload."""

    def _after_load(self, collection: Collection) -> None:
        """After load, before attach: write configuration maps, prepare read buffers."""

    def _attach(self, collection: Collection) -> list[Link]:
        raise NotImplementedError

    def read(self) -> Record:
        raise NotImplementedError

    def _require_loaded(self) -> Collection:
        if self.collection is None:
            raise InvalidInput(f"the {self.name} program is not loaded (use hypermesh.ebpf.load) or already closed")
        return self.collection

    def _close_links(self) -> None:
        links, self.links = self.links, []
        for link in links:
            link.close()


def close_all(wait: bool = True) -> None:
    """Close every Program still open in this process (the CLI calls it on SIGINT/SIGTERM)."""
    for prog in list(_live):
        prog.close(wait=wait)
