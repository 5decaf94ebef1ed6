from pipeline.stages.common import run_stage
from pipeline.stages.perturb import perturb_chunk

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    perturb_chunk,
    log_path=job.log[0],
    threads=job.threads,
    out_path=job.output[0],
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    link_path=job.input.link,
    ranges_path=job.input.ranges,
    units=job.params.units,
    classifier=job.params.classifier["spec"],
    generator=job.params.generator["spec"],
    device=job.params.device,
    precision=job.params.precision,
    segmentation_path=job.input.get("segmentation"),
    steps=job.params.steps,
    batch_size=job.params.batch_size,
)
