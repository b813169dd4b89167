"""The eBPF probe's overall verdict, and the agent's status built from it rather than from per-feature keys."""

from __future__ import annotations

import json

from hypermesh.agent.programs import EbpfStatus
from hypermesh.ebpf.probe import Feature, ProbeReport

NO_CAP = "loading an XDP program needs CAP_BPF and CAP_NET_ADMIN"


def report(*features: Feature) -> ProbeReport:
    return ProbeReport(
        kernel_release="6.18.0",
        libbpf_version="1.1",
        btf_present=True,
        bpffs_mounted=False,
        tracefs_mounted=True,
        tracefs_path="/sys/kernel/tracing",
        capabilities={"CAP_BPF": False, "CAP_PERFMON": True},
        unprivileged_bpf_disabled=2,
        features=features,
    )


def test_one_loadable_program_type_makes_ebpf_available() -> None:
    probe = report(Feature("xdp_generic", False, NO_CAP), Feature("tracepoint", True, ""))
    assert probe.available is True and probe.reason == ""


def test_nothing_loadable_gives_each_distinct_reason_once() -> None:
    probe = report(
        Feature("xdp_generic", False, NO_CAP),
        Feature("xdp_native", False, NO_CAP),
        Feature("kprobe", False, "CONFIG_KPROBES is off"),
    )
    assert probe.available is False
    assert probe.reason == f"no eBPF program type can be loaded here: {NO_CAP}; CONFIG_KPROBES is off"
    assert report().reason == "no eBPF program type can be loaded here: the probe found none"


def test_the_verdict_adds_nothing_to_the_probe_json() -> None:
    """`hypermesh ebpf probe --json` prints the report's fields: the verdict is derived, not a new key."""
    probe = report(Feature("tracepoint", True, ""))
    assert set(probe.to_dict()) == {
        "kernel_release",
        "libbpf_version",
        "btf_present",
        "bpffs_mounted",
        "tracefs_mounted",
        "tracefs_path",
        "capabilities",
        "unprivileged_bpf_disabled",
        "features",
        "lsm_modules",
    }


def test_feature_flags_are_every_boolean_of_the_report_by_name() -> None:
    probe = report(Feature("xdp_generic", False, NO_CAP), Feature("tracepoint", True, ""))
    plain = probe.to_dict()
    expected = {k: v for k, v in plain.items() if isinstance(v, bool)}
    expected.update({f"capabilities.{k}": v for k, v in plain["capabilities"].items()})
    expected.update({f["name"]: f["supported"] for f in plain["features"]})
    assert probe.feature_flags() == expected
    assert expected["capabilities.CAP_PERFMON"] is True and expected["xdp_generic"] is False


def test_agent_status_json_keeps_its_shape() -> None:
    probe = report(Feature("tracepoint", False, "tracefs is not mounted"))
    status = EbpfStatus(available=probe.available, reason=probe.reason or None, probe=probe)
    data = json.loads(json.dumps(status.to_dict()))
    assert list(data) == ["available", "reason", "probe"]
    assert data["available"] is False and "tracefs is not mounted" in data["reason"]
    assert data["probe"] == json.loads(json.dumps(probe.to_dict()))
