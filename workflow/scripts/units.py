from pipeline.job import run_stage
from pipeline.stages.samples import Samples
from pipeline.stages.units import unit_ranges

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    unit_ranges,
    log_path=job.log[0],
    threads=job.threads,
    samples=Samples(job.input.latents, job.input.activations),
    out_path=job.output[0],
    range_quantiles=job.params.range_quantiles,
)
