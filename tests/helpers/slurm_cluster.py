"""A real single-node Slurm (Debian slurm-wlm + munge) started in a scratch folder for one test session.

The recipe is ../shared/notes/slurm_ci.md: munged as the munge user, slurmctld and slurmd as root with a
slurm.conf whose state, spool, pid and log paths all live in the scratch folder, and a `sacct` stand-in
first on PATH (no accounting daemon runs; submitit polls sacct for job states). The daemons are stopped
by their pidfiles. `start()` returns None with the reason when Slurm cannot start here (no packages, not
root); the caller then reports the fallback visibly.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SACCT = """#!/bin/sh
# sacct stand-in for a cluster without slurmdbd: answers `sacct -o JobID,State,NodeList --parsable2 -j IDS`
# from squeue, which knows jobs that ended within MinJobAge (300 s).
ids=""
while [ $# -gt 0 ]; do
  case "$1" in -j) shift; ids="${ids:+$ids,}$1";; -j*) ids="${ids:+$ids,}${1#-j}";; esac
  shift
done
echo "JobID|State|NodeList"
[ -n "$ids" ] && squeue -h -r -t all -j "$ids" -o '%i|%T|%N' 2>/dev/null
exit 0
"""


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.bin = self.root / "bin"
        self.conf = self.root / "slurm.conf"
        # munged runs as the munge user: its pidfile goes where that user may write.
        self.munge_pid = Path("/run/munge") / f"unifybench-{os.getpid()}.pid"
        self.pidfiles = [self.root / "slurmd.pid", self.root / "slurmctld.pid", self.munge_pid]
        self.start_seconds: float | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{self.bin}:{os.environ.get('PATH', '')}"}

    def start(self) -> str | None:
        """None when the cluster is up (nodes idle), else why it could not start."""
        missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue") if shutil.which(b) is None]
        if missing:
            return f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)"
        if os.geteuid() != 0:
            return "slurmd needs root here"
        t0 = time.perf_counter()
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool", "log", "munge", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.bin / "sacct").write_text(SACCT)
        (self.bin / "sacct").chmod(0o755)
        mem = int(int(subprocess.check_output(["free", "-m"]).split(b"\n")[1].split()[3]) * 0.95)
        cpus = os.cpu_count() or 1
        r = self.root
        self.conf.write_text("\n".join([
            "ClusterName=unifybench-ci", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool", f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log", f"SlurmdLogFile={r}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "MpiDefault=none", "ReturnToService=2", "KillWait=2",
            "MailProg=/bin/true", "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", "SlurmctldPort=6817", "SlurmdPort=6818",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
            f"PartitionName=ci Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
        run = Path("/run/munge")
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        env = self.env()
        try:
            subprocess.run(["runuser", "-u", "munge", "--", "munged", "--pid-file", str(self.munge_pid),
                            "--force"], check=True, env=env, capture_output=True, timeout=20)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            return f"munged did not start: {getattr(e, 'stderr', b'') or e}"
        for daemon in ("slurmctld", "slurmd"):
            p = subprocess.run([daemon, "-f", str(self.conf)], env=env, capture_output=True, timeout=30)
            if p.returncode != 0:
                self.stop()
                return f"{daemon} did not start: {p.stderr.decode(errors='replace')[-300:]}"
        for _ in range(100):
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            if "idle" in out:
                self.start_seconds = time.perf_counter() - t0
                return None
            time.sleep(0.2)
        self.stop()
        return "the node never became idle (see slurmd.log)"

    def stop(self) -> None:
        # Jobs first (this scratch cluster holds only the test's), so no job step outlives slurmd.
        if self.conf.is_file() and (self.root / "slurmctld.pid").is_file():
            env = self.env()
            subprocess.run(["scancel", "--full", "--quiet", "--partition", "ci"], env=env, capture_output=True)
            for _ in range(100):
                out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
                if out.returncode != 0 or not out.stdout.strip():
                    break
                time.sleep(0.2)
        for pidfile in self.pidfiles:   # slurmd, slurmctld, then munged; by pidfile, never by name
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
