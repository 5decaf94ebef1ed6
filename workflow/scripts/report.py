from pathlib import Path

from pipeline.reporting import build_report
from pipeline.stages.common import run_stage

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    build_report,
    log_path=job.log[0],
    threads=job.threads,
    run_dir=Path(job.output[0]).parent,
    out_dir=job.output[0],
    classifier=job.params.classifier["spec"],
    generator=job.params.generator["spec"],
    device=job.params.device,
    validation_path=job.input.validation[0] if job.input.validation else None,
    segmentation_path=job.input.get("segmentation"),
    **job.params.report,
)
