from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.perturb import perturb_chunk
from pipeline.stages.samples import Samples

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    perturb_chunk,
    log_path=job.log[0],
    threads=job.threads,
    out_path=job.output[0],
    samples=Samples(job.input.latents, job.input.activations),
    link_path=job.input.link,
    ranges_path=job.input.ranges,
    units=job.params.units,
    models=ModelSetup.from_params(job.params.models),
    segmentation_path=job.input.get("segmentation"),
    steps=job.params.steps,
    batch_size=job.params.batch_size,
)
