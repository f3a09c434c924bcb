"""CPU and memory of a running process, read from /proc.

The benchmarks watch a server while it runs, over a window they choose (after start-up,
with N viewers connected): the rusage of a finished child would include all the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system time so far; the difference over a wall-clock window is the share
    of a core the process used in it."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system time so far.  Over loopback, the system time of a sender includes
    the kernel's delivery of each datagram to its receiver."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
