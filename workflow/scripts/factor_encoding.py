from pipeline.stages.common import run_stage
from pipeline.stages.encoding import factor_encoding

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    factor_encoding,
    log_path=job.log[0],
    threads=job.threads,
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    out_path=job.output[0],
    generator=job.params.generator["spec"],
    **job.params.encoding,
)
