"""How many CPUs this process may use: the default shard count.

``os.cpu_count()`` counts the machine's CPUs, not the ones a process gets. A
container limited to 2 CPUs on a 64-core host (``docker run --cpus 2``, a
Kubernetes CPU limit) would start 64 shards that share two CPUs' worth of
time, each with its own memory and accept queue. So the count is the CPUs the
process may be scheduled on (``taskset``, cpusets), capped by a CFS quota of
its cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), rounded up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

CGROUP_ROOT = "/sys/fs/cgroup"


def usable_cpus(cgroup_root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> int:
    """The CPUs this process may use, at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(cgroup_root: str = CGROUP_ROOT,
                     proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """CPUs' worth of time the process's cgroup (or a parent) may use, None if unlimited.

    The tightest quota on the way from the process's cgroup to the root
    counts: a limit set on a parent holds for every child.
    """
    try:
        with open(proc_cgroup, encoding="ascii") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: one hierarchy, "0::/path"
            quotas += _walk(os.path.join(cgroup_root, path.lstrip("/")), cgroup_root, _v2_quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's hierarchy
            mount = os.path.join(cgroup_root, controllers)
            if not os.path.isdir(mount):
                mount = os.path.join(cgroup_root, "cpu")
            quotas += _walk(os.path.join(mount, path.lstrip("/")), mount, _v1_quota)
    return min(quotas) if quotas else None


def _walk(directory: str, top: str, read: Callable[[str], float | None]) -> list[float]:
    """Quotas found from ``directory`` up to ``top``, inclusive."""
    found = []
    directory, top = os.path.normpath(directory), os.path.normpath(top)
    while True:
        quota = read(directory)
        if quota is not None:
            found.append(quota)
        if directory == top or not directory.startswith(top):
            return found
        directory = os.path.dirname(directory)


def _v2_quota(directory: str) -> float | None:
    text = _read(os.path.join(directory, "cpu.max"))  # "max 100000" or "150000 100000"
    if text is None:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return int(quota) / int(period)


def _v1_quota(directory: str) -> float | None:
    quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))  # -1: unlimited
    period = _read(os.path.join(directory, "cpu.cfs_period_us"))
    if quota is None or period is None or not quota.isdigit() or not period.isdigit():
        return None
    return int(quota) / int(period) if int(period) else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except OSError:
        return None
