"""MLflow project backends of xlinfluence's own, registered under MLflow's
`mlflow.project_backend` entry point (pyproject.toml), so a retraining goes through
`mlflow.projects.run(backend=...)` like on MLflow's own local and Kubernetes backends.

slurm.py: each run one Slurm job, submitted with submitit (docs/cluster.md).
"""
