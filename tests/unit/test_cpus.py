"""The default shard count: CPUs the process may use, read from cgroup files.

The cgroup trees here are folders of the files the kernel shows, written for
each case; ``tests/integration/test_process.py`` checks the affinity side with
a real ``taskset``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gshard.cpus import cgroup_cpu_quota, usable_cpus


def tree(root: Path, proc_line: str, files: dict[str, str]) -> tuple[str, str]:
    """A cgroup mount under ``root`` and a /proc/self/cgroup naming the process's place."""
    for name, text in files.items():
        path = root / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    (root / "fs").mkdir(exist_ok=True)
    (root / "cgroup").write_text(proc_line + "\n")
    return str(root / "fs"), str(root / "cgroup")


@pytest.mark.parametrize(("files", "quota"), [
    ({"pod/app/cpu.max": "max 100000"}, None),
    ({"pod/app/cpu.max": "150000 100000"}, 1.5),
    ({"pod/app/cpu.max": "max 100000", "pod/cpu.max": "200000 100000"}, 2.0),  # the parent's
    ({"pod/app/cpu.max": "50000 100000", "pod/cpu.max": "400000 100000"}, 0.5),  # the tightest
    ({}, None),
])
def test_a_cgroup_v2_quota_is_the_tightest_on_the_way_to_the_root(tmp_path, files, quota):
    root, proc = tree(tmp_path, "0::/pod/app", files)
    assert cgroup_cpu_quota(root, proc) == quota


@pytest.mark.parametrize(("files", "quota"), [
    ({"cpu,cpuacct/docker/1/cpu.cfs_quota_us": "-1",
      "cpu,cpuacct/docker/1/cpu.cfs_period_us": "100000"}, None),
    ({"cpu,cpuacct/docker/1/cpu.cfs_quota_us": "300000",
      "cpu,cpuacct/docker/1/cpu.cfs_period_us": "100000"}, 3.0),
])
def test_a_cgroup_v1_quota_is_read_from_the_cpu_controller(tmp_path, files, quota):
    root, proc = tree(tmp_path, "4:memory:/docker/1\n3:cpu,cpuacct:/docker/1", files)
    assert cgroup_cpu_quota(root, proc) == quota


def test_the_count_is_the_affinity_capped_by_the_quota_rounded_up(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    unlimited = tree(tmp_path / "a", "0::/", {"cpu.max": "max 100000"})
    assert usable_cpus(*unlimited) == affinity
    half = tree(tmp_path / "b", "0::/", {"cpu.max": "50000 100000"})
    assert usable_cpus(*half) == 1  # never 0
    plenty = tree(tmp_path / "c", "0::/", {"cpu.max": f"{affinity * 300000} 100000"})
    assert usable_cpus(*plenty) == affinity  # a quota above the affinity adds nothing


def test_no_cgroup_files_leave_the_affinity(tmp_path):
    assert usable_cpus(str(tmp_path / "none"), str(tmp_path / "none")) == len(
        os.sched_getaffinity(0))
