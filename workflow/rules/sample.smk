rule sample:
    output:
        directory(f"{RESULTS}/latents.zarr"),
    log:
        f"{LOGS}/sample.log",
    benchmark:
        f"{BENCHMARKS}/sample.tsv"
    params:
        samples=config["samples"],
        classes=config["classes"],
        **model_stage("stages.sample"),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/sample.py"
