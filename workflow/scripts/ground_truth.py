from pipeline.stages.common import run_stage
from pipeline.stages.world_truth import summarise_validation

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    summarise_validation,
    log_path=job.log[0],
    threads=job.threads,
    scores_path=job.input.scores,
    summary_path=job.input.summary,
    out_path=job.output[0],
    world=job.params.world,
    regions=job.params.regions,
)
