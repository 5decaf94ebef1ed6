rule report:
    input:
        metrics=f"{RESULTS}/link/metrics.json",
        link=f"{RESULTS}/link/model.pt",
        ranges=f"{RESULTS}/units/ranges.parquet",
        concepts=f"{RESULTS}/concepts/unit_concepts.parquet",
        summary=f"{RESULTS}/concepts/unit_summary.parquet",
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
    output:
        report(
            f"{RESULTS}/report/index.html",
            caption="../report/index.rst",
            category="Report",
        ),
    log:
        f"{LOGS}/report.log",
    params:
        report=config["report"],
        units=lambda wildcards: selected_units(),
        device=config["device"],
        generator=model_params("generator"),
        code=stage_code("stages.report", "stages.perturb", "stages.link", "stages.units", *MODEL_CODE),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"
