"""A real one-node Slurm cluster for tests: Debian's slurm-wlm (slurmctld, slurmd) and
munge, started in a private folder with a generated slurm.conf and munge key, on free
ports of 127.0.0.1. Clients find it through SLURM_CONF. Skips, saying what to install,
where the programs are absent, and where the tests do not run as root (slurmd must)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from xlinfluence.server import free_port

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "socket"
        self.env = {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        munge = self.root / "munge"
        for folder in (munge, self.root / "state", self.root / "spool", self.root / "log"):
            folder.mkdir(parents=True)
        munge.chmod(0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        subprocess.run(
            ["munged", "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
             f"--log-file={munge / 'log'}", f"--pid-file={munge / 'pid'}",
             f"--seed-file={munge / 'seed'}"],
            check=True, capture_output=True,
        )  # fmt: skip
        self.conf.write_text(self._conf())
        env = os.environ | self.env
        subprocess.run(["slurmctld"], check=True, env=env, capture_output=True)
        subprocess.run(["slurmd"], check=True, env=env, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.run("sinfo", "--noheader", "--format=%T").stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm node never came up (sinfo: {state!r}); {self.logs()}")

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, env=os.environ | self.env, capture_output=True, text=True, check=False
        )

    def jobs(self) -> dict[str, str]:
        """Job id -> state, of every job Slurm still lists (a job array's tasks each)."""
        listed = self.run("squeue", "--noheader", "--array", "--states=all", "--format=%i %T")
        return dict(line.split() for line in listed.stdout.splitlines() if line.strip())

    def logs(self) -> str:
        return " | ".join(
            f"{p.name}: {p.read_text()[-800:]}" for p in sorted((self.root / "log").glob("*.log"))
        )

    def stop(self) -> None:
        self.run("scancel", "--full", "--user", "root")
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/pid"):
            path = self.root / pid_file
            if path.is_file():
                try:
                    os.kill(int(path.read_text().split()[0]), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        time.sleep(1)
        shutil.rmtree(self.root, ignore_errors=True)

    def _conf(self) -> str:
        host = socket.gethostname().split(".")[0]
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        return "\n".join([
            "ClusterName=xlinfluence-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none", "ReturnToService=2",
            "MinJobAge=3600",  # ended jobs stay listed (no accounting database here)
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} "
            f"RealMemory={int(memory_mb * 0.8)} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n"  # fmt: skip


def slurm_cluster(root: Path) -> SlurmCluster:
    missing = [p for p in PROGRAMS if not shutil.which(p)]
    if missing:
        pytest.skip(
            f"no Slurm here ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm "
            "munge); CI installs it"
        )
    if os.geteuid() != 0:
        pytest.skip("Slurm's node daemon (slurmd) runs as root; CI runs the tests as root")
    cluster = SlurmCluster(root)
    cluster.start()
    return cluster
