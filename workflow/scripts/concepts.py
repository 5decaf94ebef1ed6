from pipeline.stages.common import run_stage
from pipeline.stages.concepts import find_concepts

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    find_concepts,
    log_path=job.log[0],
    threads=job.threads,
    changes_path=job.input.changes,
    nulls_path=job.input.nulls,
    link_units_path=job.input.link_units,
    link_path=job.input.link,
    ranges_path=job.input.ranges,
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    observed_path=job.input.observed,
    tuning_path=job.output.tuning,
    concepts_path=job.output.concepts,
    summary_path=job.output.summary,
    workers=job.threads,
    **job.params.concepts,
)
