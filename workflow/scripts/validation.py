from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.concepts import validate_concepts

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    validate_concepts,
    log_path=job.log[0],
    threads=job.threads,
    concepts_path=job.input.concepts,
    summary_path=job.input.summary,
    tuning_path=job.input.tuning,
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    observed_path=job.input.observed,
    out_path=job.output[0],
    models=ModelSetup.from_params(job.params.models),
    batch_size=job.params.batch_size,
    folds=job.params.folds,
    seed=job.params.seed,
)
