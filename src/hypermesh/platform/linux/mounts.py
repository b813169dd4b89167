"""The pure parser of /proc/<pid>/mountinfo (fs/proc_namespace.c show_mountinfo; proc(5)), for every reader.

The profile's storage, the Sampler's choice of disks and the agent's filesystems all read mountinfo through
parse_mountinfo, so a mount point has one spelling everywhere. Callers decode the file with "surrogateescape", as
os.listdir decodes paths: a mount point that is not UTF-8 still reaches statvfs as the bytes it is.
"""

from __future__ import annotations

__all__ = ["MountEntry", "parse_mountinfo"]


class MountEntry:
    """One mountinfo line: ``id parent major:minor root mountpoint options [optional...] - fstype source super``."""

    __slots__ = ("fstype", "major", "minor", "mountpoint", "options", "root", "source", "super_options")

    def __init__(
        self,
        major: int,
        minor: int,
        mountpoint: str,
        options: str,
        fstype: str,
        source: str,
        super_options: str,
        root: str = "/",
    ) -> None:
        self.major = major
        self.minor = minor
        self.mountpoint = mountpoint
        self.root = root  # the directory of the filesystem mounted here: "/" or a bind mount's, a cgroup namespace's
        self.options = options  # the mount's own flags: "ro,relatime"
        self.fstype = fstype
        self.source = source  # "/dev/vda1", "tmpfs", a server's "host:/export"
        self.super_options = super_options  # the superblock's: "ro,errors=remount-ro"

    def __repr__(self) -> str:
        return f"MountEntry({self.major}:{self.minor} {self.mountpoint!r} {self.fstype} {self.source!r})"

    @property
    def readonly(self) -> bool:
        """Read-only for every user of the mount: its own flag, or its superblock's (a filesystem the kernel turned
        read-only after errors shows ro only in the super options)."""
        return "ro" in self.options.split(",") or "ro" in self.super_options.split(",")


def unescape(field: str) -> str:
    r"""A mountinfo path or source as it is: the kernel writes the characters that would break the format (space,
    tab, newline, backslash) as \ooo octal escapes (fs/proc_namespace.c mangle(), seq_escape; proc(5)).

    Every other character, UTF-8 included, is as the path has it (so no "unicode_escape", which reads UTF-8 bytes
    as Latin-1). Each \ooo is read once, left to right: "\134040" is a backslash followed by "040", not a space.
    """
    if "\\" not in field:
        return field
    first, *rest = field.split("\\")
    out = [first]
    for part in rest:
        code = part[:3]
        if len(code) == 3 and all("0" <= c <= "7" for c in code):
            out.append(chr(int(code, 8)) + part[3:])
        else:
            out.append("\\" + part)
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Every mount of a mountinfo, in the kernel's order (a mount over another comes after it).

    The optional fields (shared:N, master:N...) vary in number and end at the lone "-". Lines without it or with
    too few fields are not mountinfo lines and are skipped.
    """
    mounts: list[MountEntry] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        f, tail = left.split(), right.split()
        if not sep or len(f) < 6 or not tail:
            continue
        major, _, minor = f[2].partition(":")
        mounts.append(
            MountEntry(
                int(major),
                int(minor),
                unescape(f[4]),
                f[5],
                tail[0],
                unescape(tail[1]) if len(tail) > 1 else "",
                tail[2] if len(tail) > 2 else "",
                unescape(f[3]),
            )
        )
    return mounts
