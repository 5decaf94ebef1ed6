from pathlib import Path

from pipeline.job import run_stage
from pipeline.reporting.site import build_report

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    build_report,
    log_path=job.log[0],
    threads=job.threads,
    run_dir=Path(job.input.concepts).parent.parent,
    strips_path=job.input.strips,
    out_dir=job.output[0],
    validation_path=job.input.validation[0] if job.input.validation else None,
    **job.params.site,
)
