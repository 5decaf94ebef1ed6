rule extract:
    input:
        latents=f"{RESULTS}/latents.zarr",
    output:
        directory(f"{RESULTS}/activations.zarr"),
    log:
        f"{LOGS}/extract.log",
    benchmark:
        f"{BENCHMARKS}/extract.tsv"
    params:
        require_correct=config["samples"]["require_correct"],
        batch_size=config["samples"]["batch_size"],
        **model_stage("stages.extract"),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/extract.py"
