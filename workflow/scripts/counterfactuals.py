from pipeline.stages.common import ModelSetup, run_stage
from pipeline.stages.counterfactuals import counterfactual_pair

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    counterfactual_pair,
    log_path=job.log[0],
    threads=job.threads,
    table_path=job.output.table,
    images_path=job.output.images,
    panel_path=job.output.panel,
    latents_path=job.input.latents,
    activations_path=job.input.activations,
    link_path=job.input.link,
    unit_summary_path=job.input.unit_summary,
    models=ModelSetup.from_params(job.params.models),
    origin=int(job.wildcards.origin),
    target=int(job.wildcards.target),
    segmentation_path=job.input.get("segmentation"),
    **job.params.counterfactuals,
)
