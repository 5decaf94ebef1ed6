from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.samples import Samples
from pipeline.stages.strips import render_strips

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
strips = job.params.strips
run_stage(
    render_strips,
    log_path=job.log[0],
    threads=job.threads,
    out_path=job.output[0],
    samples=Samples(job.input.latents, job.input.activations),
    link_path=job.input.link,
    ranges_path=job.input.ranges,
    concepts_path=job.input.concepts,
    models=ModelSetup.from_params(job.params.models),
    segmentation_path=job.input.get("segmentation"),
    max_units=strips["max_units"],
    top_units=strips["top_units"],
    strip_samples_count=strips["samples"],
    steps=strips["steps"],
    batch_size=strips["batch_size"],
)
