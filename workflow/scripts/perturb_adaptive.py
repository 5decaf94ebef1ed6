from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.perturb_adaptive import perturb_chunk_adaptive
from pipeline.stages.samples import Samples

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    perturb_chunk_adaptive,
    log_path=job.log[0],
    threads=job.threads,
    table_path=job.output.table,
    record_path=job.output.record,
    renders_path=job.output.get("renders"),
    samples=Samples(job.input.latents, job.input.activations),
    link_path=job.input.link,
    ranges_path=job.input.ranges,
    nulls_path=job.input.nulls,
    link_units_path=job.input.link_units,
    units=job.params.units,
    total_units=job.params.total_units,
    models=ModelSetup.from_params(job.params.models),
    segmentation_path=job.input.get("segmentation"),
    steps=job.params.steps,
    batch_size=job.params.batch_size,
    adaptive=job.params.adaptive,
    concepts=job.params.concepts,
)
