"""A stand-in for `pgbackrest info --output=json` and `wal-g backup-list --json --detail`, run
as a real process by tests/test_backups.py (pgBackRest and WAL-G need a repository and
storage to list; this prints listings in their documented shapes, see exporter/backups/).

    backup_tool.py pgbackrest STOP_EPOCH [SIZE]   one stanza "main", a full and an incr backup
    backup_tool.py walg FINISH_ISO [SIZE]         two backups, the newest finishing then
    backup_tool.py fail                           exit 3 with an error on stderr
    backup_tool.py hang PIDFILE                   starts a child in its group, then sleeps
    backup_tool.py garbage                        prints text that is not JSON
    backup_tool.py flood                          prints 8 MiB
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def pgbackrest(stop: int, size: int) -> list:
    def backup(label: str, kind: str, start: int, end: int) -> dict:
        return {
            "label": label,
            "type": kind,
            "timestamp": {"start": start, "stop": end},
            "info": {
                "size": size * 4,
                "delta": size * 2,
                "repository": {"size": size, "delta": size // 2},
            },
            "error": False,
            "database": {"id": 1, "repo-key": 1},
            "prior": None if kind == "full" else "20260101-020000F",
        }

    return [
        {
            "name": "main",
            "cipher": "none",
            "status": {"code": 0, "message": "ok", "lock": {"backup": {"held": False}}},
            "db": [{"id": 1, "repo-key": 1, "system-id": 7000000000000000001, "version": "16"}],
            "archive": [
                {"id": "16-1", "min": "000000010000000000000001", "max": "00000001000000000000000A"}
            ],
            "backup": [
                backup("20260101-020000F", "full", stop - 86400 - 600, stop - 86400),
                backup("20260101-020000F_20260102-020000I", "incr", stop - 300, stop),
            ],
        }
    ]


def walg(finish: str, size: int) -> list:
    def backup(name: str, when: str) -> dict:
        return {
            "backup_name": name,
            "time": when,
            "wal_file_name": name.removeprefix("base_"),
            "storage_name": "default",
            "start_time": when,
            "finish_time": when,
            "hostname": "db1",
            "data_dir": "/var/lib/postgresql/16/main",
            "pg_version": 160004,
            "start_lsn": 16777256,
            "finish_lsn": 16777560,
            "is_permanent": False,
            "system_identifier": 7000000000000000001,
            "uncompressed_size": size * 3,
            "compressed_size": size,
        }

    return [
        backup("base_000000010000000000000002", "2020-01-01T02:00:00.123456789Z"),
        backup("base_000000010000000000000004", finish),
    ]


def main(argv: list[str]) -> int:
    mode = argv[0]
    size = int(argv[2]) if len(argv) > 2 else 1000
    if mode == "pgbackrest":
        print(json.dumps(pgbackrest(int(argv[1]), size)))
    elif mode == "walg":
        print(json.dumps(walg(argv[1], size)))
    elif mode == "fail":
        print("ERROR: [055]: unable to load info file", file=sys.stderr)
        return 3
    elif mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(argv[1], "w") as f:
            f.write(str(child.pid))
        time.sleep(60)
    elif mode == "garbage":
        print("this is not JSON {")
    elif mode == "flood":
        block = "x" * 65536
        for _ in range(128):  # 8 MiB, bounded
            sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
