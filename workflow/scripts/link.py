from pipeline.stages.common import run_stage
from pipeline.stages.link import fit_link

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    fit_link,
    log_path=job.log[0],
    threads=job.threads,
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    model_path=job.output.model,
    metrics_path=job.output.metrics,
    units_path=job.output.units,
    classifier=job.params.classifier["spec"],
    generator=job.params.generator["spec"],
    device=job.params.device,
    precision=job.params.precision,
    **job.params.link,
)
