rule sample:
    output:
        directory(f"{RESULTS}/latents.zarr"),
    log:
        f"{LOGS}/sample.log",
    params:
        samples=config["samples"],
        classes=config["classes"],
        device=config["device"],
        precision=config["precision"],
        classifier=model_params("classifier"),
        generator=model_params("generator"),
        code=stage_code("stages.sample", *MODEL_CODE),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/sample.py"
