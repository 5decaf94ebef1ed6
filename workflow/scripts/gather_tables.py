from pipeline.stages.common import run_stage
from pipeline.stages.measure import gather_tables

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    gather_tables,
    log_path=job.log[0],
    threads=job.threads,
    table_paths=list(job.input),
    out_path=job.output[0],
)
