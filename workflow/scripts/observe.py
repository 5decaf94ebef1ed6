from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.observe import measure_samples

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    measure_samples,
    log_path=job.log[0],
    threads=job.threads,
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    out_path=job.output[0],
    models=ModelSetup.from_params(job.params.models),
    segmentation_path=job.input.get("segmentation"),
    per_class=job.params.per_class,
    batch_size=job.params.batch_size,
)
