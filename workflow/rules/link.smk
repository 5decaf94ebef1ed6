rule link:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
    output:
        model=f"{RESULTS}/link/model.pt",
        metrics=report(
            f"{RESULTS}/link/metrics.json",
            caption="../report/link_metrics.rst",
            category="Link",
        ),
        units=f"{RESULTS}/link/units.parquet",
    log:
        f"{LOGS}/link.log",
    benchmark:
        f"{BENCHMARKS}/link.tsv"
    params:
        link=config["link"],
        **model_stage("stages.link"),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/link.py"
