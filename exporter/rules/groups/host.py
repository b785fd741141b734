"""Alert rules: host."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning


def _above(ratio: float, **values: str) -> dict[str, str]:
    """The threshold in the expression and, in words, in the description."""
    return {"threshold": f"{ratio:.2f}", "limit": f"{ratio:.0%}", **values}


# file systems that are not disks (memory, container layers, images, automounts)
_NOT_DISKS = "tmpfs|ramfs|devtmpfs|overlay|squashfs|nsfs|autofs|fuse.lxcfs"

GROUP = Group(
    area="host",
    name="runbook-exporter.host",
    about="""
        Host alerts from node_exporter, for users who run it beside the exporter; in their own file
        so they can be left out. Thresholds are the runbooks' (000: CPU 70 / 90 %, memory 80 / 95 %,
        disk 80 / 95 %) as constants: node_exporter exports no threshold series. Edit them in exporter/rules/groups/host.py. The
        `for:` of each alert is justified in docs/runbooks/<AlertName>.md.
    """,
    rules=(
        Alert(
            "HostCpuHigh",
            expr="""
                1 - avg without(cpu, mode) (rate(node_cpu_seconds_total{mode="idle"}[5m])) > ${threshold}
            """,
            summary="Host {{ $labels.instance }}: CPU {{ $value | humanizePercentage }} busy",
            description="""
                The CPUs of {{ $labels.instance }} have been {{ $value | humanizePercentage }} busy
                (5-minute average), above ${limit} for ${for}${impact}
            """,
            variants=(
                warning("15m", **_above(0.70, impact=".")),
                critical("10m", **_above(0.90, impact=": everything on the host slows down.")),
            ),
        ),
        Alert(
            "HostMemoryHigh",
            why="MemAvailable: what can be allocated without swapping, page cache included",
            expr="""
                1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes > ${threshold}
            """,
            summary="Host {{ $labels.instance }}: memory {{ $value | humanizePercentage }} used",
            description="""
                {{ $value | humanizePercentage }} of the memory of {{ $labels.instance }} is in use
                (not available without swapping), above ${limit} for ${for}${impact}
            """,
            variants=(
                warning("15m", **_above(0.80, impact=".")),
                critical("5m", **_above(0.95, impact=": the OOM killer is next.")),
            ),
        ),
        Alert(
            "HostDiskUsageHigh",
            why="""
                writable, real filesystems only: tmpfs, overlay and read-only mounts are not disks
            """,
            expr=f"""
                1 - node_filesystem_avail_bytes{{fstype!~"{_NOT_DISKS}"}}
                  / node_filesystem_size_bytes
                  > ${{threshold}}
                and
                node_filesystem_readonly == 0
            """,
            summary="Host {{ $labels.instance }}: {{ $labels.mountpoint }} {{ $value | humanizePercentage }} full",
            description="""
                Filesystem {{ $labels.mountpoint }} ({{ $labels.device }}) of {{ $labels.instance }}
                is {{ $value | humanizePercentage }} full, above ${limit} for ${for};
                {{ with printf `node_filesystem_avail_bytes{instance=%q,mountpoint=%q}` $labels.instance $labels.mountpoint | query }}{{ . | first | value | humanize1024 }}B{{ end }}
                left.${impact}
            """,
            variants=(
                warning("30m", **_above(0.80, impact="")),
                critical("5m", **_above(0.95, impact=" PostgreSQL stops when its disk is full.")),
            ),
        ),
    ),
)
