rule perturb:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        link=f"{RESULTS}/link/model.pt",
        ranges=f"{RESULTS}/units/ranges.parquet",
    output:
        renders(f"{RESULTS}/renders/chunk-{{chunk}}.zarr"),
    log:
        f"{LOGS}/perturb/chunk-{{chunk}}.log",
    params:
        units=units_of_chunk,
        steps=config["tuning"]["steps"],
        batch_size=config["tuning"]["batch_size"],
        device=config["device"],
        classifier=model_params("classifier"),
        generator=model_params("generator"),
        code=stage_code("stages.perturb", "stages.link", "stages.units", "measures", *MODEL_CODE),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/perturb.py"
