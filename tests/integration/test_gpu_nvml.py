"""NVIDIA GPUs through the real nvidia-ml-py code path, against a stand-in libnvidia-ml.so.1 built here with gcc.

tests/fixtures/gpu/nvidia/fake_nvml.c implements the NVML calls we make with nvml.h's structure layouts: device 0
answers everything; device 1 answers NVML_ERROR_GPU_IS_LOST to utilization and temperature (the error path).
Each case runs in a fresh interpreter: a process loads NVML once and keeps it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require, require_binary

SOURCE = Path(__file__).resolve().parent.parent / "fixtures" / "gpu" / "nvidia" / "fake_nvml.c"
SCRIPT = """
import json, sys
import hypermesh
from hypermesh.gpu import GpuReader
reader = GpuReader(sys_root=sys.argv[1])
print(json.dumps({
    "gpus": [g.to_dict() for g in reader.read()],
    "processes": [p.to_dict() for p in reader.processes()],
    "problems": reader.problems,
    "profile": hypermesh.profile().to_dict()["gpus"] if sys.argv[1] == "/sys" else None,
    "pynvml": "pynvml" in sys.modules,
}))
"""


@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = require_binary("gcc")
    require(__import__("importlib.util").util.find_spec("pynvml"), "nvidia-ml-py not installed: make venv")
    out = tmp_path_factory.mktemp("nvml") / "libnvidia-ml.so.1"
    cmd = [gcc, "-shared", "-fPIC", "-Wl,-soname,libnvidia-ml.so.1", "-o", str(out), str(SOURCE)]
    subprocess.run(cmd, check=True, timeout=60)
    return out


def run(library: Path | None, sys_root: str = "/sys", **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HYPERMESH_NVML", "FAKE_NVML"))}
    if library is not None:
        environ["HYPERMESH_NVML"] = str(library)
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, sys_root], env=environ, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_devices_identity_readings_and_one_failing_device(fake_nvml: Path) -> None:
    got = run(fake_nvml, FAKE_NVML_PID=str(os.getpid()))
    gpus = got["gpus"]
    assert isinstance(gpus, list) and len(gpus) == 2
    a100, t4 = gpus
    assert {k: a100[k] for k in ("index", "vendor", "model", "uuid", "pci_bus_id", "driver")} == {
        "index": 0,
        "vendor": "nvidia",
        "model": "NVIDIA A100-SXM4-40GB",
        "uuid": "GPU-0a1b2c3d-0000-1111-2222-333344445555",
        "pci_bus_id": "0000:07:00.0",  # NVML says 00000000:07:00.0; sysfs form, so it joins DRM and fdinfo
        "driver": "nvidia",
    }
    assert a100["memory_total_bytes"] == 42949672960 and a100["memory_used_bytes"] == 1 << 30
    assert (a100["busy_percent"], a100["temperature_celsius"], a100["power_watts"]) == (37.0, 54.0, 87.5)
    assert (a100["status"], a100["reason"]) == ("ok", None)
    # device 1 lost two queries: degraded with NVML's own words, what did answer still reported
    assert t4["status"] == "degraded" and t4["busy_percent"] is None and t4["temperature_celsius"] is None
    assert t4["reason"] == "NVML utilization: GPU is lost; NVML temperature: GPU is lost"
    assert t4["power_watts"] == 31.0 and t4["memory_total_bytes"] == 16106127360
    assert got["processes"] == [
        {
            "pid": os.getpid(),
            "pci_bus_id": "0000:07:00.0",
            "driver": "nvidia",
            "client_id": f"nvml-{os.getpid()}",
            "engines_ns": {},
            "memory_bytes": {"vram": 256 << 20},
            "engine_capacity": None,
        }
    ]
    assert got["problems"] == {}
    # profile().gpus lists the same GPUs with the identity fields only
    assert got["profile"] == [
        {k: g[k] for k in ("index", "vendor", "model", "uuid", "pci_bus_id", "driver", "memory_total_bytes")}
        for g in gpus
    ]


def test_init_failure_is_a_problem_not_an_error(fake_nvml: Path) -> None:
    got = run(fake_nvml, FAKE_NVML_INIT_ERROR="9")  # NVML_ERROR_DRIVER_NOT_LOADED
    assert got["gpus"] == [] and got["problems"] == {"nvml": "NVML did not initialise: Driver Not Loaded"}


def test_missing_library_is_a_problem_and_nvidia_cards_stay_listed_from_drm(tmp_path: Path) -> None:
    card = tmp_path / "sys/class/drm/card0/device"
    card.mkdir(parents=True)
    (card / "vendor").write_text("0x10de\n")
    (card / "uevent").write_text("DRIVER=nvidia\nPCI_ID=10DE:2204\nPCI_SLOT_NAME=0000:01:00.0\n")
    got = run(tmp_path / "absent/libnvidia-ml.so.1", str(tmp_path / "sys"))
    problems = got["problems"]
    assert isinstance(problems, dict) and "could not be loaded" in problems["nvml"]
    gpus = got["gpus"]
    assert isinstance(gpus, list) and len(gpus) == 1
    assert gpus[0]["vendor"] == "nvidia" and gpus[0]["pci_bus_id"] == "0000:01:00.0"
    assert gpus[0]["status"] == "degraded" and "could not be loaded" in gpus[0]["reason"]


def test_no_driver_means_no_nvml_and_no_pynvml_import() -> None:
    """This host has no nvidia module: NVML is not even loaded, pynvml never imported."""
    require(not os.path.isdir("/sys/module/nvidia"), "this host has an NVIDIA driver")
    got = run(None)
    assert got["gpus"] == [] and got["problems"] == {} and got["pynvml"] is False and got["profile"] == []


def test_a_real_agent_exports_the_fake_nvml_figures_in_metrics_and_assets(fake_nvml: Path, tmp_path: Path) -> None:
    """The agent process loads the stand-in library (HYPERMESH_NVML): /metrics and /v1/assets carry its figures."""
    import httpx

    from tests.fixtures.agent.agent_process import AgentProcess
    from tests.integration.test_agent_assets import metric_samples

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HYPERMESH_NVML", "FAKE_NVML"))}
    environ["HYPERMESH_NVML"] = str(fake_nvml)
    agent = AgentProcess("--state-dir", str(tmp_path / "state"), env=environ)
    with agent as process, httpx.Client(base_url=process.url, timeout=20) as client:
        text = client.get("/metrics").text
        assets = {(a["kind"], a["id"]): a for a in client.get("/v1/assets").json()["assets"]}
    # what the fake library answers (tests/fixtures/gpu/nvidia/fake_nvml.c), as the library-level test reads it
    a100 = (("gpu", "0"), ("pci_bus_id", "0000:07:00.0"), ("uuid", "GPU-0a1b2c3d-0000-1111-2222-333344445555"),
            ("vendor", "nvidia"))  # fmt: skip
    reference = run(fake_nvml)["gpus"]
    assert isinstance(reference, list) and len(reference) == 2
    t4_uuid = reference[1]["uuid"]
    t4 = (("gpu", "1"), ("pci_bus_id", reference[1]["pci_bus_id"]), ("uuid", t4_uuid), ("vendor", "nvidia"))
    assert metric_samples(text, "hypermesh_gpu_busy_ratio") == {a100: 0.37}  # device 1 lost its utilization
    assert metric_samples(text, "hypermesh_gpu_temperature_celsius") == {a100: 54.0}
    assert metric_samples(text, "hypermesh_gpu_power_watts") == {a100: 87.5, t4: 31.0}
    assert metric_samples(text, "hypermesh_gpu_memory_total_bytes") == {
        a100: 42949672960,
        t4: reference[1]["memory_total_bytes"],
    }
    assert metric_samples(text, "hypermesh_gpu_memory_used_bytes")[a100] == 1 << 30
    info = {dict(k)["uuid"]: dict(k) for k in metric_samples(text, "hypermesh_gpu_info")}
    assert info[a100[2][1]]["model"] == "NVIDIA A100-SXM4-40GB" and info[a100[2][1]]["driver"] == "nvidia"
    # the asset view: both devices, one each, none allocated
    assert assets["gpu", a100[2][1]]["capacity"] == 1.0 and assets["gpu", a100[2][1]]["allocated"] == 0.0
    assert assets["gpu", t4_uuid]["capacity"] == 1.0
