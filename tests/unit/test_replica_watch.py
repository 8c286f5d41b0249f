"""The autoscaling test's ReplicaWatch reads its own server's controller log, never an older one."""

from benchmarks.ramp import ReplicaWatch


def test_the_newest_session_of_the_servers_pid_is_its_own(tmp_path):
    """Ray's session folders outlive their processes and pids are reused: a folder of a process that
    had the server's pid hours ago must not be read (it once was, and the test saw no replica)."""
    for name in ("session_2026-12-03_15-49-31_600580_14001", "session_2026-12-03_19-17-44_679138_14001",
                 "session_2026-12-03_19-20-00_000001_14002"):
        log = tmp_path / name / "logs" / "serve" / "controller_99.log"
        log.parent.mkdir(parents=True)
        log.write_text("")
    found = ReplicaWatch(14001, ray_tmp=tmp_path)._find_log()
    assert found == tmp_path / "session_2026-12-03_19-17-44_679138_14001" / "logs" / "serve" / "controller_99.log"
    assert ReplicaWatch(14003, ray_tmp=tmp_path)._find_log() is None
