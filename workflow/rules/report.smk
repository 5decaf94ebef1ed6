# The unit pages' strips, rendered again from the link and the generator (renders are
# temporary), with each frame's part map when the regions come from a segmenter.
rule report_strips:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        link=f"{RESULTS}/link/model.pt",
        ranges=f"{RESULTS}/units/ranges.parquet",
        concepts=f"{RESULTS}/concepts/unit_concepts.parquet",
        **segmentation_input(),
    output:
        directory(f"{RESULTS}/report_strips.zarr"),
    log:
        f"{LOGS}/report_strips.log",
    benchmark:
        f"{BENCHMARKS}/report_strips.tsv"
    params:
        strips={key: config["report"][key] for key in ("max_units", "top_units", "samples", "steps", "batch_size")},
        **model_stage("stages.strips"),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/report_strips.py"


# The site: reads artifacts and renders templates on the CPU, loading no model.
rule report:
    input:
        strips=f"{RESULTS}/report_strips.zarr",
        metrics=f"{RESULTS}/link/metrics.json",
        ranges=f"{RESULTS}/units/ranges.parquet",
        changes=f"{RESULTS}/tables/activation_changes.parquet",
        concepts=f"{RESULTS}/concepts/unit_concepts.parquet",
        summary=f"{RESULTS}/concepts/unit_summary.parquet",
        counterfactuals=COUNTERFACTUAL_OUTPUTS,
        validation=validation_outputs(),
        factor_encoding=factor_encoding_outputs(),
    output:
        report(
            directory(f"{RESULTS}/report"),
            htmlindex="index.html",
            caption="../report/site.rst",
            category="Report",
        ),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCHMARKS}/report.tsv"
    params:
        site={key: config["report"][key] for key in ("max_units", "top_units", "counterfactual_examples")},
        code=stage_code("reporting.site"),
        templates=templates_version(),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"
