"""Everything that talks to MLflow: where runs live, starting and checking them, reuse.

Steps call these functions (as `tracking.<name>`) and never import mlflow themselves; mlflow
is imported only in this package (and by the UI command, ui.py). Under Accelerate every
process attaches to the same run (MLFLOW_RUN_ID), and only the main process writes to it.

The package: `store` (the tracking URI, refused logins, a temporary store), `runs` (a step's
run and its tags, reading runs back), `downloads` (artifacts and their cache), `reuse`
(launching a step, or reusing a finished match), `records` (runs as data, for study bundles)
and `lineage` (a run's upstream inputs, the fine-tuned model). Everything is re-exported
here; a test that patches a name patches it in the submodule that looks it up.
"""

from xlinfluence.tracking.downloads import artifact_names, download, download_partial
from xlinfluence.tracking.lineage import (
    MODEL_URI_TAG,
    log_final_model,
    log_upstream_inputs,
)
from xlinfluence.tracking.records import (
    artifact_files,
    create_finished_run,
    run_record,
    run_tags,
    runs_tagged,
    set_run_tag,
)
from xlinfluence.tracking.reuse import (
    HOW_NOT_WHAT,
    _expected_digests,
    active_run_experiment_id,
    end_if_running,
    find_launched,
    find_reusable,
    run_or_reuse,
    submit,
    submit_all,
)
from xlinfluence.tracking.runs import (
    CHILD_TAG,
    CODE_VERSION_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    PARENT_TAG,
    RESUMED_TAG,
    REUSED_TAG,
    RUN_NAME_TAG,
    SETTING_TAG,
    STEP_TAG,
    SYSTEM_METRICS_INTERVAL_S,
    THREADS_TAG,
    UPSTREAM_TAG,
    StepRun,
    code_version,
    epoch_metrics,
    fetch_run,
    params_as_given,
    run_params,
    run_step,
    step_run,
)
from xlinfluence.tracking.store import (
    DEFAULT_DB,
    TEMPORARY_EXPERIMENT,
    AccessError,
    TrackingError,
    active_experiment_id,
    check_access,
    refused,
    setup,
    store_is_local,
    temporary_store,
)

__all__ = [
    "CHILD_TAG", "CODE_VERSION_TAG", "DEFAULT_DB", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG",
    "HOW_NOT_WHAT", "MODEL_URI_TAG", "PARENT_TAG", "RESUMED_TAG", "REUSED_TAG",
    "RUN_NAME_TAG",
    "SETTING_TAG", "STEP_TAG", "SYSTEM_METRICS_INTERVAL_S", "TEMPORARY_EXPERIMENT",
    "THREADS_TAG", "UPSTREAM_TAG", "AccessError", "StepRun", "TrackingError",
    "_expected_digests", "active_experiment_id", "active_run_experiment_id",
    "artifact_files", "artifact_names", "check_access", "code_version",
    "create_finished_run", "download", "download_partial", "end_if_running",
    "epoch_metrics", "fetch_run", "find_launched", "find_reusable", "log_final_model",
    "log_upstream_inputs",
    "params_as_given", "refused", "run_or_reuse", "run_params", "run_record", "run_step",
    "run_tags", "runs_tagged", "set_run_tag", "setup", "step_run", "store_is_local",
    "submit", "submit_all", "temporary_store",
]  # fmt: skip
