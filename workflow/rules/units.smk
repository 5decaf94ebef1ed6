rule units:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
    output:
        report(
            f"{RESULTS}/units/ranges.parquet",
            caption="../report/ranges.rst",
            category="Units",
        ),
    log:
        f"{LOGS}/units.log",
    params:
        range_quantiles=config["tuning"]["range_quantiles"],
        code=stage_code("stages.units"),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/units.py"
