"""The statistics the service keeps per file system, after known I/O
through a real mount.

The nodes count each client request once (the head counts a write, its
replicas do not) and report with their heartbeats; `cpfs serve` adds what
is new to the current minute and samples the capacity used. So after
1 MiB written and read back on a file system of its own, its series
(DescribeFileSystemTimeSeries) holds exactly that many bytes, with
latencies, and its capacity; DescribeFileSystemStatistics counts it.
"""

import time
import uuid

from dataplane_harness import ApiError, wait_until
from test_metrics import token, wait_settled, write_once_and_read_back

DEADLINE_S = 20.0


def series(server, fs_id, **extra):
    body = server.api("DescribeFileSystemTimeSeries", FileSystemId=fs_id, **extra)
    assert body["FileSystemId"] == fs_id, body
    return body, body["Datapoints"]["Datapoint"]


def summed(points, field):
    return sum(p[field] for p in points)


def test_io_through_a_mount_shows_in_the_series(server, filesystem, mount):
    fs = filesystem.fs_id
    t = token(server, "metrics-token")

    wait_settled(server, t)
    _, before = series(server, fs)
    assert summed(before, "WriteBytes") == 0 and summed(before, "ReadBytes") == 0, before

    size = 1 << 20
    write_once_and_read_back(mount.path / f"stats-{uuid.uuid4().hex[:8]}", size)

    def counted():
        _, points = series(server, fs)
        return (summed(points, "WriteBytes") >= size and summed(points, "ReadBytes") >= size
                and any((p["UsedBytes"] or 0) >= size for p in points))
    wait_until("the I/O and the space in the series", counted, DEADLINE_S)
    body, points = series(server, fs)
    # Once per request, not once per copy.
    assert summed(points, "WriteBytes") == size, points
    assert summed(points, "ReadBytes") == size, points
    busy = [p for p in points if p["WriteOps"] or p["ReadOps"]]
    assert busy and all(p["WriteLatencyUs"] > 0 for p in busy if p["WriteOps"]), busy
    assert all(p["ReadLatencyUs"] > 0 for p in busy if p["ReadOps"]), busy
    assert all(abs(p["WriteBandwidth"] * 60 - p["WriteBytes"]) < 1e-3 for p in points), points
    assert body["Period"] == 60
    # Buckets are whole minutes, oldest first.
    stamps = [p["Timestamp"] for p in points]
    assert stamps == sorted(stamps) and all(s.endswith(":00Z") for s in stamps), stamps

    # The same I/O in one bucket of an hour.
    hour = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() - 3600))
    _, hourly = series(server, fs, Period=3600, StartTime=hour)
    assert summed(hourly, "WriteBytes") == size and len(hourly) <= 2, hourly

    stats = server.api("DescribeFileSystemStatistics", PageSize=100)
    cpfs = [s for s in stats["FileSystemStatistics"]["FileSystemStatistic"]
            if s["FileSystemType"] == "cpfs"]
    assert cpfs and cpfs[0]["TotalCount"] >= 1, stats
    assert fs in [f["FileSystemId"] for f in stats["FileSystems"]["FileSystem"]], stats


def test_series_refuses_bad_ranges(server, filesystem):
    fs = filesystem.fs_id
    for params, code in (
        ({"Period": 120}, "InvalidParameter.Period"),
        ({"StartTime": "2026-01-01T00:00:00Z", "EndTime": "2025-01-01T00:00:00Z"},
         "InvalidParameter.EndTime"),
        ({"StartTime": "2026-01-01T00:00:00Z", "EndTime": "2026-01-08T00:00:00Z"},
         "InvalidParameter.Period"),
        ({"StartTime": "soon"}, "InvalidParameter.StartTime"),
    ):
        try:
            server.api("DescribeFileSystemTimeSeries", FileSystemId=fs, **params)
        except ApiError as e:
            assert e.code == code and e.status == 400, (params, e.code, e.message)
        else:
            raise AssertionError(f"{params} accepted")
    try:
        server.api("DescribeFileSystemTimeSeries", FileSystemId="cpfs-0000000000000000")
    except ApiError as e:
        assert (e.code, e.status) == ("InvalidFileSystem.NotFound", 404), e.code
    else:
        raise AssertionError("an unknown file system answered")
