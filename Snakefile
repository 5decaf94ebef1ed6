from pathlib import Path

from snakemake.utils import min_version

from pipeline.stages.config import load_schema, validate_config
from pipeline.validation import planted_run_config

min_version("9.0")


configfile: "config/config.yaml"


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


rule all:
    default_target: True
    input:
        final_outputs(),
