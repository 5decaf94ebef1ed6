from pipeline.stages.common import run_stage
from pipeline.stages.nulls import null_controls

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    null_controls,
    log_path=job.log[0],
    threads=job.threads,
    out_path=job.output[0],
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    link_path=job.input.link,
    ranges_path=job.input.ranges,
    classifier=job.params.classifier["spec"],
    generator=job.params.generator["spec"],
    device=job.params.device,
    precision=job.params.precision,
    segmentation_path=job.input.get("segmentation"),
    steps=job.params.steps,
    directions=job.params.directions,
    seed=job.params.seed,
    batch_size=job.params.batch_size,
)
