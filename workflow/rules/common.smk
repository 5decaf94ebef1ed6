import functools

from pipeline.models import describe_model, spec_weights_sha256
from pipeline.stages.common import code_version
from pipeline.stages.concepts import is_planted_classifier
from pipeline.stages.config import ConfigError, chunk_units, select_units

RESULTS = f"results/{config['run']}"
LOGS = f"logs/{config['run']}"
# Time and memory of the heavy jobs (Snakemake's benchmark TSVs), the source of the SLURM
# profile's runtime and mem_mb (profiles/README.md).
BENCHMARKS = f"benchmarks/{config['run']}"

MODEL_THREADS = 4

# Relative to the rule files; used only with `--software-deployment-method conda`.
CONDA_ENV = "../../environment.yml"


wildcard_constraints:
    chunk=r"\d+",


def model_params(role):
    """A model's spec plus the sha256 of the files it loads, so new weights re-run its stages."""
    return {"spec": config[role], "sha256": spec_weights_sha256(config[role], role)}


def model_stage(module, roles=("classifier", "generator")):
    """What every model stage passes as params.

    ``models`` holds each role's spec and weights' sha256, the device and the precision
    (pipeline.stages.common.ModelSetup.from_params reads it); ``code`` is the version of the
    stage's module and of everything it imports.
    """
    models = {role: model_params(role) for role in roles}
    return {
        "models": models | {"device": config["device"], "precision": config["precision"]},
        "code": stage_code(module),
    }


def stage_code(*modules):
    """The code version of a stage: its modules and every pipeline module they import."""
    return code_version(*modules)


@functools.cache
def classifier_units():
    """The classifier's unit count, from its cached description: planning loads no model."""
    return describe_model(config["classifier"], "classifier").num_units


def selected_units():
    return select_units(config["units"], classifier_units())


def unit_chunks():
    return chunk_units(selected_units(), config["tuning"]["chunk_size"])


def units_of_chunk(wildcards):
    chunks = unit_chunks()
    chunk = int(wildcards.chunk)
    if chunk not in chunks:
        raise ConfigError(f"chunk {chunk} holds none of the selected units; chunks are {sorted(chunks)}")
    return chunks[chunk]


def chunk_files(pattern):
    return expand(pattern, chunk=sorted(unit_chunks()))


def renders(path):
    return directory(path) if config["tuning"]["keep_renders"] else temp(directory(path))


def validates_concepts():
    """Whether the classifier is the planted glass-box one, so the concepts can be scored against its truth."""
    return is_planted_classifier(config["classifier"])


def runs_validation():
    """Whether a planted-unit run goes beside this one (validation.enabled, not already planted)."""
    return config["validation"]["enabled"] and not validates_concepts()


def validation_outputs():
    """The validation.json that scores this run's concepts on planted units, if there is one."""
    if validates_concepts():
        return [f"{RESULTS}/concepts/validation.json"]
    if runs_validation():
        return [f"{RESULTS}/validation/concepts/validation.json"]
    return []


def final_outputs():
    outputs = [
        f"{RESULTS}/latents.zarr",
        f"{RESULTS}/activations.zarr",
        f"{RESULTS}/link/model.pt",
        f"{RESULTS}/link/metrics.json",
        f"{RESULTS}/units/ranges.parquet",
        f"{RESULTS}/tables/activation_changes.parquet",
        f"{RESULTS}/tables/null_controls.parquet",
        f"{RESULTS}/concepts/unit_concepts.parquet",
        f"{RESULTS}/concepts/unit_summary.parquet",
        f"{RESULTS}/report",
        *COUNTERFACTUAL_OUTPUTS,
    ]
    outputs += validation_outputs()
    if config["tuning"]["keep_renders"]:
        outputs += chunk_files(f"{RESULTS}/renders/chunk-{{chunk}}.zarr")
    return outputs
