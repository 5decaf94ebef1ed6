from pipeline.stages.common import run_stage
from pipeline.stages.measure import measure_chunk

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    measure_chunk,
    log_path=job.log[0],
    threads=job.threads,
    renders_path=job.input[0],
    out_path=job.output[0],
)
