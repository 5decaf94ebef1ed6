rule null_controls:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        link=f"{RESULTS}/link/model.pt",
        ranges=f"{RESULTS}/units/ranges.parquet",
        **segmentation_input(),
    output:
        f"{RESULTS}/tables/null_controls.parquet",
    log:
        f"{LOGS}/null_controls.log",
    benchmark:
        f"{BENCHMARKS}/null_controls.tsv"
    params:
        steps=config["tuning"]["steps"],
        directions=config["tuning"]["null_directions"],
        seed=config["tuning"]["null_seed"],
        batch_size=config["tuning"]["batch_size"],
        **model_stage("stages.nulls"),
    threads: CHUNK_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/null_controls.py"
