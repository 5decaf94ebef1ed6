rule concepts:
    input:
        changes=f"{RESULTS}/tables/activation_changes.parquet",
        nulls=f"{RESULTS}/tables/null_controls.parquet",
        link_units=f"{RESULTS}/link/units.parquet",
    output:
        concepts=report(
            f"{RESULTS}/concepts/unit_concepts.parquet",
            caption="../report/unit_concepts.rst",
            category="Concepts",
        ),
        summary=report(
            f"{RESULTS}/concepts/unit_summary.parquet",
            caption="../report/unit_summary.rst",
            category="Concepts",
        ),
    log:
        f"{LOGS}/concepts.log",
    benchmark:
        f"{BENCHMARKS}/concepts.tsv"
    params:
        concepts=config["concepts"],
        code=stage_code("stages.concepts"),
    threads: 2
    conda:
        CONDA_ENV
    script:
        "../scripts/concepts.py"


# Only with the planted glass-box classifier (pipeline.validation); rule all asks for it then.
rule validation:
    input:
        concepts=f"{RESULTS}/concepts/unit_concepts.parquet",
        summary=f"{RESULTS}/concepts/unit_summary.parquet",
    output:
        f"{RESULTS}/concepts/validation.json",
    log:
        f"{LOGS}/validation.log",
    params:
        classifier=model_params("classifier"),
        code=stage_code("stages.concepts"),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/validation.py"
