from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.nulls import null_controls
from pipeline.stages.samples import Samples

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    null_controls,
    log_path=job.log[0],
    threads=job.threads,
    out_path=job.output[0],
    samples=Samples(job.input.latents, job.input.activations),
    link_path=job.input.link,
    ranges_path=job.input.ranges,
    models=ModelSetup.from_params(job.params.models),
    segmentation_path=job.input.get("segmentation"),
    steps=job.params.steps,
    directions=job.params.directions,
    seed=job.params.seed,
    batch_size=job.params.batch_size,
)
