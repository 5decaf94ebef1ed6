from pathlib import Path

from snakemake.utils import min_version
from torch.cuda import device_count as cuda_device_count

from pipeline.locks import record_owner
from pipeline.stages.config import ConfigError, check_device, load_config_file, load_schema, stop_on, validate_config
from pipeline.models.registry import ModelSpecError
from pipeline.store import ArtifactError
from pipeline.validation import planted_run_config

min_version("9.0")

DEFAULT_CONFIG = "config/config.yaml"

# The default run's file is not a base that a user's file is merged into: with --configfile
# that file alone is the config, and the schema fills in what it leaves out, so a user's
# model spec or pair list never inherits keys from the default's (see config/README.md).
if not workflow.overwrite_configfiles:
    with stop_on(ConfigError):
        load_config_file(DEFAULT_CONFIG)

    configfile: DEFAULT_CONFIG


with stop_on(ConfigError):
    validate_config(config, load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/link.smk"
include: "workflow/rules/units.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/perturb.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/nulls.smk"
include: "workflow/rules/concepts.smk"
include: "workflow/rules/counterfactuals.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/train.smk"


# The ground-truth run beside this one: this very workflow with the glass-box classifier,
# under results/{run}/validation, its rules prefixed validation_.
if runs_validation():

    module planted_validation:
        snakefile:
            "Snakefile"
        config:
            planted_run_config(config, classifier_units())

    use rule * from planted_validation exclude all, train_default_models as validation_*


with stop_on(ConfigError, ModelSpecError, ArtifactError):
    check_before_jobs()


onstart:
    record_owner(".snakemake")
    # Only here is it known whether jobs run on this machine or a cluster's.
    if workflow.local_exec:
        with stop_on(ConfigError):
            check_device(config["device"], cuda_device_count())


onsuccess:
    if Path(RESULTS, "report", "index.html").is_file():
        print(f"Finished. The report is {Path(RESULTS, 'report', 'index.html').resolve()}")


onerror:
    print(f"The run stopped; the error lines above (and the job logs under {LOGS}/) say why. "
          "Fix that and run the same command again: it resumes where it stopped.")


rule all:
    default_target: True
    input:
        final_outputs(),
