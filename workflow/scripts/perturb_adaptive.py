from pipeline.stages.common import run_stage
from pipeline.stages.perturb_adaptive import perturb_chunk_adaptive

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    perturb_chunk_adaptive,
    log_path=job.log[0],
    threads=job.threads,
    table_path=job.output.table,
    record_path=job.output.record,
    renders_path=job.output.get("renders"),
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    link_path=job.input.link,
    ranges_path=job.input.ranges,
    nulls_path=job.input.nulls,
    link_units_path=job.input.link_units,
    units=job.params.units,
    total_units=job.params.total_units,
    classifier=job.params.classifier["spec"],
    generator=job.params.generator["spec"],
    device=job.params.device,
    precision=job.params.precision,
    segmentation_path=job.input.get("segmentation"),
    steps=job.params.steps,
    batch_size=job.params.batch_size,
    adaptive=job.params.adaptive,
    concepts=job.params.concepts,
)
