"""Pipeline steps: each turns a step config into a tracked MLflow run of its kind."""
