"""hypermesh: one honest, fast view of a machine's resources.

>>> import hypermesh
>>> hypermesh.profile().cpu.logical_cores          # what the machine is
>>> hypermesh.Sampler().sample().cpu.percent       # what it does

Importing this package reads no files and imports neither the CLI, the web stack nor psutil
(on Linux); everything heavier loads on first use.
"""

from __future__ import annotations

from hypermesh.errors import (
    BackendError,
    HypermeshError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unsupported,
    VerifierError,
)
from hypermesh.model import Sample, SystemProfile
from hypermesh.sampling.sampler import Sampler

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "HypermeshError",
    "InvalidInput",
    "NotFound",
    "PermissionDenied",
    "Sample",
    "Sampler",
    "SystemProfile",
    "Unsupported",
    "VerifierError",
    "__version__",
    "profile",
]


def profile() -> SystemProfile:
    """What this machine is: OS, CPU, memory, storage, network, GPUs and cgroup limits."""
    from hypermesh.platform import backend

    return backend().profile()
