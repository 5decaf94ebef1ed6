from pipeline.stages.common import run_stage
from pipeline.stages.report import write_report

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    write_report,
    log_path=job.log[0],
    threads=job.threads,
    out_path=job.output[0],
    metrics_path=job.input.metrics,
    ranges_path=job.input.ranges,
    concepts_path=job.input.concepts,
    summary_path=job.input.summary,
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    link_path=job.input.link,
    units=job.params.units,
    generator=job.params.generator["spec"],
    device=job.params.device,
    **job.params.report,
)
