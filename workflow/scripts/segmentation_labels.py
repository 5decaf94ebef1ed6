from pipeline.segmentation import world_labels
from pipeline.stages.common import run_stage

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    world_labels,
    log_path=job.log[0],
    threads=job.threads,
    folder=job.output[0],
    generator=job.params.generator["spec"],
    classes=job.params.classes,
    truncation=job.params.truncation,
    count=job.params.renders,
    seed=job.params.seed,
)
