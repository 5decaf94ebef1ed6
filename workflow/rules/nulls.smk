rule null_controls:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        link=f"{RESULTS}/link/model.pt",
        ranges=f"{RESULTS}/units/ranges.parquet",
    output:
        f"{RESULTS}/tables/null_controls.parquet",
    log:
        f"{LOGS}/null_controls.log",
    params:
        steps=config["tuning"]["steps"],
        directions=config["tuning"]["null_directions"],
        seed=config["tuning"]["null_seed"],
        batch_size=config["tuning"]["batch_size"],
        device=config["device"],
        precision=config["precision"],
        classifier=model_params("classifier"),
        generator=model_params("generator"),
        code=stage_code(
            "stages.nulls", "stages.perturb", "stages.measure", "stages.link", "stages.units", "measures", *MODEL_CODE
        ),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/null_controls.py"
