from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.sample import sample_latents

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    sample_latents,
    log_path=job.log[0],
    threads=job.threads,
    out_path=job.output[0],
    models=ModelSetup.from_params(job.params.models),
    classes=job.params.classes,
    **job.params.samples,
)
