"""What a run was made from, in MLflow's own terms, and the fine-tuned model as an MLflow model.

Lineage: an influence run records the train run's training and test sets as its dataset
inputs (the very datasets, by digest, that the train run logged) and its checkpoints; an
analyze run records the influence scores it read. The MLflow UI shows them in the run's
Datasets column, and `mlflow.get_run(id).inputs` gives them to a script. Checkpoints and
scores are recorded by reference (a dataset with a source and no rows): MLflow tracks
model inputs only on Databricks.

The model: a finished train run that kept its checkpoints gets its final checkpoint logged
as a `transformers` model with a signature (text in; label and score out), loadable with
`mlflow.transformers.load_model` or `mlflow.pyfunc.load_model(uri)`, with the uri in the
run's MODEL_URI_TAG. A retraining (remove=...) gets none: a study makes hundreds.
"""

from __future__ import annotations

import json
import warnings
from importlib import metadata

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

from xlinfluence import artifacts
from xlinfluence.config import StepConfig, TrainConfig
from xlinfluence.tracking.downloads import download
from xlinfluence.tracking.params import params_as_given

MODEL_URI_TAG = "xlinfluence.model_uri"
#: A text-classification pipeline's: a text in; the predicted label's name and score out.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string")]),
    outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
)
CONTEXT_TAG = "mlflow.data.context"
#: The train run's dataset contexts, as the influence run that scores them calls them.
ATTRIBUTED = {"training": "attributed training examples", "testing": "attributed test examples"}
MODEL_NAME = "model"
#: The libraries a logged model needs; pinned to this environment's versions.
MODEL_REQUIREMENTS = ("torch", "transformers", "tokenizers")


def log_upstream_inputs(config: StepConfig) -> None:
    """Record the active run's upstream artifacts as its inputs (module doc)."""
    train_run_id = getattr(config, "train_run_id", "")
    influence_run_id = getattr(config, "influence_run_id", "")
    inputs = []
    if train_run_id:
        upstream = MlflowClient().get_run(train_run_id)
        for given in upstream.inputs.dataset_inputs:  # the same datasets, by digest
            context = {t.key: t.value for t in given.tags}.get(CONTEXT_TAG, "")
            inputs.append(_input(given.dataset, ATTRIBUTED.get(context, context)))
        inputs.append(_reference(upstream, artifacts.CHECKPOINTS, "checkpoints scored"))
    if influence_run_id:
        upstream = MlflowClient().get_run(influence_run_id)
        inputs.append(_reference(upstream, artifacts.INFLUENCE, "scores analysed"))
    if inputs:
        MlflowClient().log_inputs(mlflow.active_run().info.run_id, datasets=inputs)


def log_final_model(train_run_id: str) -> str | None:
    """Log the run's final checkpoint as an MLflow model (once); its model uri, or None for a
    run without checkpoints or a retraining."""
    client = MlflowClient()
    run = client.get_run(train_run_id)
    if MODEL_URI_TAG in run.data.tags:
        return run.data.tags[MODEL_URI_TAG]
    config = TrainConfig.from_params(params_as_given(run.data.params))
    if config.remove or not config.save_checkpoints:
        return None
    # transformers only where a model is logged: tracking is imported by `xlinfluence --help`
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    index = artifacts.load_checkpoint_index(download(train_run_id, artifacts.CHECKPOINT_INDEX))
    directory = download(train_run_id, f"{artifacts.CHECKPOINTS}/{index[-1]['name']}")
    model = AutoModelForSequenceClassification.from_pretrained(directory, use_safetensors=True)
    labels = artifacts.read_json(download(train_run_id, artifacts.LABELS))
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {name: i for i, name in enumerate(labels)}
    model.eval()
    # model and tokenizer, not a pipeline: MLflow builds the pipeline when the model is
    # loaded, and importing transformers' pipelines costs seconds in every train process
    classifier = {"model": model, "tokenizer": AutoTokenizer.from_pretrained(directory)}
    with mlflow.start_run(run_id=train_run_id):
        info = mlflow.transformers.log_model(
            classifier,
            name=MODEL_NAME,
            task="text-classification",
            pip_requirements=[
                f"{n}=={metadata.version(n).split('+')[0]}" for n in MODEL_REQUIREMENTS
            ],  # fmt: skip
            signature=SIGNATURE,  # given, so no prediction is run to infer it
        )
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def _input(dataset: DatasetEntity, context: str) -> DatasetInput:
    return DatasetInput(dataset=dataset, tags=[InputTag(key=CONTEXT_TAG, value=context)])


def _reference(run, folder: str, context: str) -> DatasetInput:
    """An upstream artifact folder as a dataset with a source and no rows; its digest is
    the run's ID, so the same folder is one dataset wherever it is read."""
    source = f"{run.info.artifact_uri.rstrip('/')}/{folder}"
    try:
        with warnings.catch_warnings():  # two registered sources read file URIs alike
            warnings.simplefilter("ignore", UserWarning)
            resolved = resolve_dataset_source(source)
        source_json, source_type = resolved.to_json(), resolved._get_source_type()
    except MlflowException:  # a scheme MLflow cannot resolve: the URI as text
        source_json, source_type = json.dumps({"uri": source}), "code"
    name = f"{folder} of {run.info.run_name or run.info.run_id}"
    entity = DatasetEntity(name=name, digest=run.info.run_id[:36], source_type=source_type,
                           source=source_json)  # fmt: skip
    return _input(entity, context)
