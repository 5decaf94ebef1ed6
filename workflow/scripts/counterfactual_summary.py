from pipeline.stages.common import run_stage
from pipeline.stages.counterfactuals import summarise_pairs

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    summarise_pairs,
    log_path=job.log[0],
    threads=job.threads,
    table_paths=list(job.input.tables),
    images_paths=list(job.input.images),
    comparison_paths=job.params.comparisons,
    unit_summary_path=job.input.unit_summary,
    summary_table_path=job.output.table,
    summary_units_path=job.output.units,
    summary_json_path=job.output.json,
    n_boot=job.params.n_boot,
    seed=job.params.seed,
    top_measures=job.params.top_measures,
    top_units=job.params.top_units,
    world=job.params.world,
)
