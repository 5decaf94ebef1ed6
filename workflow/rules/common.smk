import functools
import sys

from pipeline.locks import clear_stale_lock, is_locked
from pipeline.models import describe_model, spec_weights_sha256
from pipeline.models.registry import ModelSpecError
from pipeline.models.builtin import builtin_world
from pipeline.provenance import dependents, recorded_inputs
from pipeline.reporting.render import templates_version
from pipeline.stages.common import code_version
from pipeline.validation import check_planted_world, is_planted_classifier
from pipeline.segmentation.config import WORLD, check_segmentation, trained_model
from pipeline.segmentation.labels import LabelsError
from pipeline.stages.config import (
    ConfigError,
    check_classes,
    check_pairs,
    check_writable,
    chunk_units,
    select_units,
    stop_on,
)
from pipeline.store import ArtifactError, discard_damaged, discard_temporaries

RESULTS = f"results/{config['run']}"
LOGS = f"logs/{config['run']}"
# Time and memory of the heavy jobs (Snakemake's benchmark TSVs), the source of the SLURM
# profile's runtime and mem_mb (profiles/README.md).
BENCHMARKS = f"benchmarks/{config['run']}"

MODEL_THREADS = 4
# The jobs a run has many of at once (perturb and measure chunks, the null controls beside
# them) take one thread each: on two cores two run side by side, so one job's start-up,
# store writes and single-threaded stretches overlap the other's work, and two one-thread
# jobs render about as fast as one two-thread job (bench/render_path.py). --set-threads overrides.
CHUNK_THREADS = 1

# Relative to the rule files; used only with `--software-deployment-method conda`.
CONDA_ENV = "../../environment.yml"


wildcard_constraints:
    chunk=r"\d+",


def generator_world():
    """The procedural world the generator renders, None for a generator that is not builtin:
    its class manifest and factors are the ground truth of the checks that need one."""
    try:
        return builtin_world(config["generator"])
    except ModelSpecError as error:
        raise ModelSpecError(f"generator.{error}") from None


# Checked here, so a bad generator name or bad labels stop the run before any job starts.
with stop_on(ModelSpecError, LabelsError):
    GENERATOR_WORLD = generator_world()
    SEGMENTATION_LABELS = check_segmentation(config["segmentation"], config["generator"])


def segmentation_labels_dir():
    """The labels folder the segmenter learns from: written by rule segmentation_labels, or the user's."""
    return f"{RESULTS}/segmentation/labels" if SEGMENTATION_LABELS == WORLD else SEGMENTATION_LABELS


SEGMENTATION_MODEL = trained_model(config["segmentation"], config["generator"], RESULTS)
# What the regions of every measured render come from, as the run's outputs record it.
REGION_SOURCE = "segmentation" if SEGMENTATION_MODEL else "saliency"


def segmentation_input():
    """The trained segmenter as a rule input, when the regions come from one."""
    return {"segmentation": SEGMENTATION_MODEL} if SEGMENTATION_MODEL else {}


def model_params(role):
    """A model's spec plus the sha256 of the files it loads, so new weights re-run its stages."""
    return {"spec": config[role], "sha256": spec_weights_sha256(config[role], role)}


def model_stage(module, roles=("classifier", "generator"), precision=None):
    """What every model stage passes as params.

    ``models`` holds each role's spec and weights' sha256, the device and the precision
    (pipeline.stages.common.ModelSetup.from_params reads it): the run's, or ``precision`` for
    a stage that always runs at one; ``code`` is the version of the stage's module and of
    everything it imports.
    """
    models = {role: model_params(role) for role in roles}
    return {
        "models": models | {"device": config["device"], "precision": precision or config["precision"]},
        "code": stage_code(module),
    }


def stage_code(*modules):
    """The code version of a stage: its modules and every pipeline module they import."""
    return code_version(*modules)


@functools.cache
def classifier_units():
    """The classifier's unit count, from its cached description: planning loads no model."""
    return describe_model(config["classifier"], "classifier").num_units


@functools.cache
def model_class_sizes():
    """The classifier's classes and whether it has a head, and the generator's classes, from the
    models' cached descriptions."""
    classifier = describe_model(config["classifier"], "classifier")
    return {
        "classifier": classifier.num_classes,
        "classifier_head": classifier.has_head,
        "generator": describe_model(config["generator"], "generator").c_dim,
    }


def check_before_jobs():
    """What can be known wrong before any job runs, each as one line (ConfigError, ArtifactError).

    Also clears a lock left by a killed run and, while no run holds the lock, removes the
    temporaries of killed writes and every damaged artifact with what was made from it, so
    that this run stops once, naming them, and the next one rebuilds them.
    """
    for folder in (RESULTS, LOGS):
        check_writable(folder)
    sizes = model_class_sizes()
    check_classes(config["classes"], {"classifier": sizes["classifier"], "generator": sizes["generator"]})
    head_classes = sizes["classifier"] if sizes["classifier_head"] else None
    check_pairs(config["counterfactuals"]["pairs"], config["classes"], head_classes)
    check_planted_world(config["classifier"], config["generator"])
    unit_chunks()
    if workflow.is_main_process:
        note = clear_stale_lock(".snakemake")
        if note:
            print(note, file=sys.stderr)
        # Another run's files are its own business, and Snakemake will stop this one at the lock.
        if not is_locked(".snakemake"):
            discard_temporaries(RESULTS)
            made_from = lambda paths: dependents(paths, recorded_inputs(".snakemake/metadata"))
            damaged = discard_damaged(RESULTS, made_from)
            if damaged:
                raise ArtifactError("\n".join(damaged))


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


def planted_scores():
    """The validation.json that scores this run's concepts on planted units, or None."""
    if validates_concepts():
        return f"{RESULTS}/concepts/validation.json"
    if runs_validation():
        return f"{RESULTS}/validation/concepts/validation.json"
    return None


def validation_outputs():
    """The run's validation.json, the planted scores with the world's ground truth beside them, if there is one."""
    return [f"{RESULTS}/validation/validation.json"] if planted_scores() else []


def factor_encoding_outputs():
    """The table of how well the layer encodes each world factor: only a builtin generator
    knows the factors of its latents."""
    return [f"{RESULTS}/concepts/factor_encoding.parquet"] if GENERATOR_WORLD else []


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
    if SEGMENTATION_LABELS:
        outputs.append(f"{RESULTS}/segmentation/metrics.json")
    outputs += factor_encoding_outputs()
    outputs += validation_outputs()
    if config["tuning"]["keep_renders"]:
        outputs += chunk_files(f"{RESULTS}/renders/chunk-{{chunk}}.zarr")
    return outputs
