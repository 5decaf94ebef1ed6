from pipeline.counterfactual import summarise_pairs
from pipeline.stages.common import run_stage

job = snakemake  # noqa: F821 (injected by Snakemake's script directive)
run_stage(
    summarise_pairs,
    log_path=job.log[0],
    threads=job.threads,
    table_paths=list(job.input.tables),
    unit_summary_path=job.input.unit_summary,
    summary_table_path=job.output.table,
    summary_json_path=job.output.json,
    n_boot=job.params.n_boot,
    seed=job.params.seed,
)
