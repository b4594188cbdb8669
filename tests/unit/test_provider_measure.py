"""What the provider reads of its containers' cgroups, and its metrics as a scrape renders them
(the real provider, its containers and its HTTP server: tests/docker/test_provider_metrics.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kiln.protocol.messages import ActivityUsage
from kiln_provider.metrics import MetricsSource, Probe, Snapshot, measure, registry_of, usage_entries
from kiln_provider.procfs import Cgroup


def cgroup_v2(folder: Path, usec: int, memory: int) -> Cgroup:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.stat").write_text(f"usage_usec {usec}\nuser_usec 1\nsystem_usec 2\n")
    (folder / "memory.current").write_text(f"{memory}\n")
    return Cgroup(("v2", folder / "cpu.stat"), folder / "memory.current")


def test_cgroup_files_of_either_version_are_read_and_a_gone_one_reads_as_none(tmp_path: Path) -> None:
    v2 = cgroup_v2(tmp_path / "v2", 2_500_000, 4096)
    assert v2.cpu_seconds() == 2.5 and v2.memory_bytes() == 4096
    (tmp_path / "cpuacct.usage").write_text("1500000000\n")
    (tmp_path / "memory.usage_in_bytes").write_text("8192\n")
    v1 = Cgroup(("v1", tmp_path / "cpuacct.usage"), tmp_path / "memory.usage_in_bytes")
    assert v1.cpu_seconds() == 1.5 and v1.memory_bytes() == 8192
    gone = Cgroup(("v2", tmp_path / "gone" / "cpu.stat"), tmp_path / "gone" / "memory.current")
    assert gone.cpu_seconds() is None and gone.memory_bytes() is None
    assert Cgroup(None, None).cpu_seconds() is None


def test_a_container_whose_cgroup_went_keeps_the_cpu_time_last_read(tmp_path: Path) -> None:
    live = cgroup_v2(tmp_path / "live", 3_000_000, 1000)
    gone = Cgroup(("v2", tmp_path / "gone" / "cpu.stat"), None)
    usage = measure([Probe("a1", live, 1.0), Probe("a2", gone, 7.0)])
    assert usage == [
        ActivityUsage(activity="a1", cpu_seconds=3.0, memory=1000),
        ActivityUsage(activity="a2", cpu_seconds=7.0, memory=0),
    ]
    most = usage_entries(usage, 1)
    assert [u.activity for u in most] == ["a2"], "past the cap, the busiest"


async def test_a_scrape_reads_the_loop_s_snapshot_and_the_cpu_counter_never_goes_back(tmp_path: Path) -> None:
    cgroup = cgroup_v2(tmp_path / "c", 4_000_000, 2048)
    probes = [Probe("a1", cgroup, 0.0)]
    ended = [1.0]  # the CPU seconds of the containers removed

    def snapshot() -> Snapshot:
        return Snapshot(list(probes), ended[0], {"hub": 2}, 1234, 1, 99)

    registry = registry_of(MetricsSource(asyncio.get_running_loop(), snapshot, lambda: (1, 4096)))

    async def scrape() -> dict[str, float]:
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
                found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
        return found

    first = await scrape()
    assert first["kiln_provider_containers"] == 1 and first["kiln_provider_cpu_seconds_total"] == 5.0
    assert first["kiln_provider_memory_bytes"] == 2048 and first["kiln_provider_volume_bytes"] == 4096
    assert first["kiln_provider_image_pulls_total{source=hub}"] == 2
    assert first["kiln_provider_image_pulls_total{source=registry}"] == 0
    assert first["kiln_provider_image_pull_bytes_total"] == 1234 and first["kiln_provider_image_cache_bytes"] == 99
    assert first["kiln_provider_agent_channel_errors_total"] == 1 and "process_cpu_seconds_total" in first
    # Removed, and tallied at less than its cgroup last said (its final read still to come): no dip.
    probes.clear()
    ended[0] = 2.0
    second = await scrape()
    assert second["kiln_provider_containers"] == 0 and second["kiln_provider_cpu_seconds_total"] == 5.0
