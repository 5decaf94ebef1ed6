# With tuning.adaptive the perturb jobs measure their own renders and write the chunk tables.
if not config["tuning"]["adaptive"]["enabled"]:

    rule measure:
        input:
            f"{RESULTS}/renders/chunk-{{chunk}}.zarr",
        output:
            f"{RESULTS}/tables/chunk-{{chunk}}.parquet",
        log:
            f"{LOGS}/measure/chunk-{{chunk}}.log",
        benchmark:
            f"{BENCHMARKS}/measure/chunk-{{chunk}}.tsv"
        params:
            code=stage_code("stages.measure"),
        threads: CHUNK_THREADS
        conda:
            CONDA_ENV
        script:
            "../scripts/measure.py"


rule gather_tables:
    input:
        lambda wildcards: chunk_files(f"{RESULTS}/tables/chunk-{{chunk}}.parquet"),
    output:
        report(
            f"{RESULTS}/tables/activation_changes.parquet",
            caption="../report/activation_changes.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/gather_tables.log",
    params:
        code=stage_code("stages.measure"),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/gather_tables.py"
