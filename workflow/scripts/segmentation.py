from pipeline.segmentation import train_segmenter
from pipeline.stages.common import run_stage

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    train_segmenter,
    log_path=job.log[0],
    threads=job.threads,
    model_path=job.output.model,
    metrics_path=job.output.metrics,
    labels_dir=job.input.labels,
    generator=job.params.generator["spec"],
    segmentation=job.params.segmentation,
    device=job.params.device,
)
