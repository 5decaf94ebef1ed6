from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.link import fit_link
from pipeline.stages.samples import Samples

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    fit_link,
    log_path=job.log[0],
    threads=job.threads,
    samples=Samples(job.input.latents, job.input.activations),
    model_path=job.output.model,
    metrics_path=job.output.metrics,
    units_path=job.output.units,
    models=ModelSetup.from_params(job.params.models),
    **job.params.link,
)
