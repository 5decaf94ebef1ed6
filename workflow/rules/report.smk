rule report:
    input:
        metrics=f"{RESULTS}/link/metrics.json",
        link=f"{RESULTS}/link/model.pt",
        ranges=f"{RESULTS}/units/ranges.parquet",
        changes=f"{RESULTS}/tables/activation_changes.parquet",
        concepts=f"{RESULTS}/concepts/unit_concepts.parquet",
        summary=f"{RESULTS}/concepts/unit_summary.parquet",
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        counterfactuals=COUNTERFACTUAL_OUTPUTS,
        validation=validation_outputs(),
        **segmentation_input(),
    output:
        directory(f"{RESULTS}/report"),
    log:
        f"{LOGS}/report.log",
    params:
        report=config["report"],
        device=config["device"],
        classifier=model_params("classifier"),
        generator=model_params("generator"),
        code=stage_code(
            "reporting", "counterfactual", "stats", "stages.perturb", "stages.link", "stages.units", *MODEL_CODE
        ),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"
