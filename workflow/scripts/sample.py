from pipeline.stages.common import run_stage
from pipeline.stages.sample import sample_latents

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    sample_latents,
    log_path=job.log[0],
    threads=job.threads,
    out_path=job.output[0],
    classifier=job.params.classifier["spec"],
    generator=job.params.generator["spec"],
    classes=job.params.classes,
    device=job.params.device,
    precision=job.params.precision,
    **job.params.samples,
)
