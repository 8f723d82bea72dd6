"""`backend=slurm`: each retraining one Slurm job, submitted with submitit.

Why submitit and not MLflow's Slurm plugin (`mlflow-slurm` 1.0.6, released before MLflow 3):
that plugin builds a conda or virtualenv environment on every job (no `local` env
manager, which the retrainings use), its `get_status` never polls Slurm, `cancel` only
prints, a job Slurm no longer lists reads as FINISHED, and it imports MLflow's private
modules. submitit (Meta's, maintained) writes and submits the sbatch script, keeps each
job's logs in one folder, and knows Slurm's options; what it does not do (reading job
states without Slurm's accounting database, re-attaching after a restart) is the few
lines of `SlurmRun` below.

The backend runs the project's entry point command as MLflow's local backend would, in
the checkout (which, with the Python environment, must be on a filesystem the nodes
share), with MLFLOW_RUN_ID naming the run MLflow created for it; the run carries the
job's id and log path as tags, so a restarted experiment finds a job it had launched
(`SlurmRun.of`, steps/retrain.py) instead of launching it again, and a failed one is
resubmitted into the same run, which resumes.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

from mlflow.entities import Run, RunStatus, RunTag
from mlflow.projects import load_project
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.projects.utils import (
    PROJECT_BUILD_IMAGE,
    PROJECT_DOCKER_ARGS,
    PROJECT_DOCKER_AUTH,
    PROJECT_ENV_MANAGER,
    PROJECT_STORAGE_DIR,
    PROJECT_SYNCHRONOUS,
    fetch_and_validate_project,
    get_or_create_run,
)
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_BACKEND

from xlinfluence.errors import ConfigError

log = logging.getLogger(__name__)

JOB_TAG = "xlinfluence.slurm.job_id"
LOG_TAG = "xlinfluence.slurm.log"
#: Slurm job states (squeue %T) of a job that has not ended.
_ALIVE = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
    "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
    "RESV_DEL_HOLD", "SPECIAL_EXIT",
}  # fmt: skip
POLL_SECONDS = 5.0  # between squeue calls


@dataclass(frozen=True)
class SlurmSettings:
    """The backend config (a JSON file, `backend_config=...`): where and how each
    retraining runs. Keys are these fields' names; docs/cluster.md shows a file."""

    partition: str = ""
    account: str = ""
    time_min: int = 60  # Slurm's time limit per retraining
    cpus_per_task: int = 1
    gpus_per_task: int = 0  # one GPU per retraining is what a fine-tuning needs
    mem_gb: int = 0  # 0: the partition's default
    setup: list[str] = field(default_factory=list)  # shell lines before the run, e.g. activate
    sbatch: dict[str, str] = field(default_factory=dict)  # more sbatch options, e.g. qos
    log_dir: str = "slurm-jobs"  # job scripts and logs; on a filesystem the nodes share

    @classmethod
    def from_config(cls, config: dict) -> SlurmSettings:
        known = {f.name: f for f in fields(cls)}
        given = {k: v for k, v in config.items() if k not in _NOT_SETTINGS}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(
                f"the slurm backend config has unknown key(s) {unknown}; it takes "
                f"{', '.join(known)} (docs/cluster.md)."
            )
        for key, value in given.items():
            kind, words = _KINDS[str(known[key].type)]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(
                    f"the slurm backend config's {key!r} is {value!r}; give {words} "
                    "(docs/cluster.md)."
                )
        return cls(**given)

    def executor_parameters(self) -> dict:
        """submitit.SlurmExecutor.update_parameters(...) for these settings."""
        parameters = {
            "time": self.time_min, "cpus_per_task": self.cpus_per_task, "setup": self.setup,
            "additional_parameters": dict(self.sbatch),
            "stderr_to_stdout": True,
        }  # fmt: skip
        optional = {"partition": self.partition, "account": self.account,
                    "gpus_per_task": self.gpus_per_task,
                    "mem": f"{self.mem_gb}GB" if self.mem_gb else ""}  # fmt: skip
        return parameters | {k: v for k, v in optional.items() if v}


# A field's annotation -> (JSON type, how the error names it).
_KINDS = {
    "str": (str, "a string"), "int": (int, "a whole number"),
    "list[str]": (list, "a list of strings"), "dict[str, str]": (dict, "an object of strings"),
}  # fmt: skip
# What MLflow adds to a backend config before it reaches the backend.
_NOT_SETTINGS = {
    PROJECT_ENV_MANAGER, PROJECT_SYNCHRONOUS, PROJECT_DOCKER_ARGS, PROJECT_STORAGE_DIR,
    PROJECT_BUILD_IMAGE, PROJECT_DOCKER_AUTH,
}  # fmt: skip


class SlurmBackend(AbstractBackend):
    """The `slurm` project backend (pyproject.toml's mlflow.project_backend entry point):
    `mlflow run -b slurm` submits one run; steps/retrain.py submits a study's retrainings
    as one job array (`run_array`), which Slurm schedules as separate jobs."""

    def run(
        self, project_uri, entry_point, params, version, backend_config, tracking_uri,
        experiment_id,
    ) -> SlurmRun:  # fmt: skip
        entry = (entry_point, params, None)
        return self.run_array(
            project_uri, [entry], version, backend_config, tracking_uri, experiment_id
        )[0]

    def run_array(
        self, project_uri: str, entries: list[tuple[str, dict, str | None]], version,
        backend_config: dict, tracking_uri: str, experiment_id: str,
    ) -> list[SlurmRun]:  # fmt: skip
        """Each (entry point, params, run ID or None) one task of one sbatch submission (a
        job array where there are several), run in its MLflow run (created here if None)."""
        import submitit

        settings = SlurmSettings.from_config(backend_config)
        run_ids, functions, projects = [], [], {}
        for entry_point, params, run_id in entries:
            work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
            run = get_or_create_run(
                run_id, project_uri, experiment_id, work_dir, version, entry_point, params
            )
            run_ids.append(run.info.run_id)
            if work_dir not in projects:
                projects[work_dir] = load_project(work_dir)
            command = (
                projects[work_dir]
                .get_entry_point(entry_point)
                .compute_command(params, backend_config.get(PROJECT_STORAGE_DIR))
            )
            environment = {
                "MLFLOW_RUN_ID": run.info.run_id, "MLFLOW_TRACKING_URI": tracking_uri,
                "MLFLOW_EXPERIMENT_ID": experiment_id,
            }  # fmt: skip
            functions.append(_job(command, environment, work_dir))
        executor = submitit.SlurmExecutor(
            folder=Path(settings.log_dir).resolve(), max_num_timeout=0
        )
        name = f"xlinfluence-{uuid.uuid4().hex[:12]}"
        executor.update_parameters(**settings.executor_parameters(), job_name=name)
        client = MlflowClient()
        for task, run_id in enumerate(run_ids):  # found again should this process die in sbatch
            client.set_tag(run_id, JOB_TAG, f"{name}[{task}]")
        try:
            with executor.batch():
                jobs = [executor.submit(function) for function in functions]
        except (RuntimeError, OSError) as err:  # submitit's FailedJobError holds sbatch's stderr
            for run_id in run_ids:
                client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            said = " ".join(str(err).split())[:500]
            raise ConfigError(
                f"sbatch refused the retrainings ({said}); check the slurm backend config "
                "(partition, account, time_min; docs/cluster.md)."
            ) from err
        submitted = []
        for run_id, job in zip(run_ids, jobs, strict=True):
            log_path = str(job.paths.stdout)
            tags = {JOB_TAG: job.job_id, LOG_TAG: log_path, MLFLOW_PROJECT_BACKEND: "slurm"}
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            log.info("run %s is Slurm job %s (log %s)", run_id, job.job_id, log_path)
            submitted.append(SlurmRun(run_id, job.job_id, log_path))
        return submitted


def _job(command: str, environment: dict[str, str], work_dir: str):
    """The function a task runs: the entry point's command in the checkout. The variables
    go on the job's command line, not into the pickled function's environment (which
    would replace the node's), and no secret is among them; `python` is this interpreter,
    which submitit's own job script runs with too (a shared filesystem)."""
    from submitit.helpers import CommandFunction

    interpreter = shlex.quote(str(Path(sys.executable).parent))
    script = f'export PATH={interpreter}:"$PATH"; {command}'
    line = ["env", *(f"{k}={v}" for k, v in environment.items()), "bash", "-c", script]
    return CommandFunction(line, cwd=work_dir, verbose=True)  # streams into the job's log


def backend() -> SlurmBackend:
    """The entry point's builder, as MLflow's plugin loader calls it."""
    return SlurmBackend()


class SlurmRun(SubmittedRun):
    """One retraining's Slurm job and its MLflow run. Its state comes from `squeue`
    (which lists an ended job for Slurm's MinJobAge) and from the run itself, so it needs
    no accounting database."""

    TAG = JOB_TAG  # what marks a run as launched this way

    def __init__(self, run_id: str, job_id: str, log_path: str):
        super().__init__()
        self._run_id, self.job_id, self.log_path = run_id, job_id, log_path
        self.job_state = ""
        SQUEUE.watch(job_id)

    @classmethod
    def of(cls, run: Run) -> SlurmRun:
        """The job a run was launched as (its tags), e.g. after the experiment restarted.
        A run tagged only provisionally (`<job name>[<task>]`: its launcher died while
        submitting) is looked up by the job's name; not found, it was never submitted."""
        tags = run.data.tags
        job_id = tags[JOB_TAG]
        if provisional := re.fullmatch(r"(xlinfluence-\w+)\[(\d+)\]", job_id):
            job_id = _job_named(provisional[1], int(provisional[2]))
        return cls(run.info.run_id, job_id, tags.get(LOG_TAG, ""))

    @property
    def run_id(self) -> str:
        return self._run_id

    def describe(self) -> str:
        state = self.job_state or (
            "no longer listed (cancelled before it started, or ended longer ago than "
            "Slurm's MinJobAge)"
        )
        return f"Slurm job {self.job_id} {state}, log {self.log_path}"

    def get_status(self) -> str:
        """MLflow's status name: RUNNING while Slurm has the job; then the run's own,
        FAILED where the job ended and left the run unfinished (KILLED when cancelled)."""
        state = SQUEUE.state(self.job_id)
        if state is None:  # squeue failed this time (a busy controller): ask again later
            return "RUNNING"
        self.job_state = state
        if state in _ALIVE:
            return "RUNNING"
        status = MlflowClient().get_run(self.run_id).info.status
        if status == "FINISHED":
            return status
        return "KILLED" if self.job_state.startswith("CANCELLED") else "FAILED"

    def wait(self) -> bool:
        while (status := self.get_status()) == "RUNNING":
            time.sleep(POLL_SECONDS)
        return status == "FINISHED"

    def cancel(self) -> None:
        if self.job_id:
            subprocess.run(["scancel", self.job_id], capture_output=True, check=False)


class Squeue:
    """Job states from one `squeue` call per POLL_SECONDS for every job being watched: a
    study's hundreds of jobs cost the controller one request per poll, not one per job."""

    def __init__(self):
        self.watched: set[str] = set()
        self.states: dict[str, str] = {}
        self.polled_at = float("-inf")
        self.answered = True

    def watch(self, job_id: str) -> None:
        """Include a job in the next poll, which comes at the next `state` call."""
        if job_id and job_id not in self.watched:
            self.watched.add(job_id)
            self.polled_at = float("-inf")

    def state(self, job_id: str) -> str | None:
        """A job's squeue state ('' once Slurm no longer lists it; None: squeue failed)."""
        if not job_id:
            return ""
        self.watch(job_id)
        if time.monotonic() - self.polled_at > POLL_SECONDS:
            self._poll()
        return self.states.get(job_id, "") if self.answered else None

    def _poll(self) -> None:
        try:
            listed = subprocess.run(
                ["squeue", "--noheader", "--array", "--states=all", "--format=%i %T",
                 "--jobs", ",".join(sorted(self.watched))],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            said = listed.stderr
            self.answered = listed.returncode == 0 or "Invalid job id" in said
        except OSError as err:  # no squeue on this machine (any more)
            said, self.answered = str(err), False
        if not self.answered:
            log.warning("squeue failed (asking again): %s", said.strip()[:300])
            return
        self.polled_at = time.monotonic()
        self.states = dict(line.split() for line in listed.stdout.splitlines() if line.strip())


SQUEUE = Squeue()


def _job_named(name: str, task: int) -> str:
    """The id of task `task` of the job named `name` ('' where Slurm lists none)."""
    listed = subprocess.run(
        ["squeue", "--noheader", "--array", "--states=all", "--name", name, "--format=%i"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    ids = listed.stdout.split()
    if len(ids) == 1 and "_" not in ids[0]:  # one run, submitted as a plain job
        return ids[0] if task == 0 else ""
    return next((i for i in ids if i.endswith(f"_{task}")), "")
