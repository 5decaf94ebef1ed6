rule extract:
    input:
        latents=f"{RESULTS}/latents.zarr",
    output:
        directory(f"{RESULTS}/activations.zarr"),
    log:
        f"{LOGS}/extract.log",
    params:
        require_correct=config["samples"]["require_correct"],
        batch_size=config["samples"]["batch_size"],
        device=config["device"],
        precision=config["precision"],
        classifier=model_params("classifier"),
        generator=model_params("generator"),
        code=stage_code("stages.extract", *MODEL_CODE),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/extract.py"
