from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.extract import extract_activations

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    extract_activations,
    log_path=job.log[0],
    threads=job.threads,
    latents_path=job.input.latents,
    out_path=job.output[0],
    models=ModelSetup.from_params(job.params.models),
    require_correct=job.params.require_correct,
    batch_size=job.params.batch_size,
)
