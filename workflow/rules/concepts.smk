# The accepted samples measured as they are, for each unit's tuning across natural samples.
rule observe:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        **segmentation_input(),
    output:
        f"{RESULTS}/tables/sample_measures.parquet",
    log:
        f"{LOGS}/observe.log",
    params:
        per_class=config["concepts"]["observed_samples"],
        batch_size=config["samples"]["batch_size"],
        **model_stage("stages.observe"),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/observe.py"


rule concepts:
    input:
        changes=f"{RESULTS}/tables/activation_changes.parquet",
        nulls=f"{RESULTS}/tables/null_controls.parquet",
        link_units=f"{RESULTS}/link/units.parquet",
        link=f"{RESULTS}/link/model.pt",
        ranges=f"{RESULTS}/units/ranges.parquet",
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        observed=f"{RESULTS}/tables/sample_measures.parquet",
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
        tuning=f"{RESULTS}/concepts/unit_tuning.parquet",
    log:
        f"{LOGS}/concepts.log",
    benchmark:
        f"{BENCHMARKS}/concepts.tsv"
    params:
        # observed_samples is the observe rule's; its output is an input here.
        concepts={key: value for key, value in config["concepts"].items() if key != "observed_samples"},
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
        tuning=f"{RESULTS}/concepts/unit_tuning.parquet",
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        observed=f"{RESULTS}/tables/sample_measures.parquet",
    output:
        f"{RESULTS}/concepts/validation.json",
    log:
        f"{LOGS}/validation.log",
    params:
        batch_size=config["samples"]["batch_size"],
        folds=config["concepts"]["redundancy_folds"],
        seed=config["concepts"]["seed"],
        **model_stage("stages.concepts"),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/validation.py"


# The validation.json that rule all and the report read: the planted scores as they are, and
# how many of the classifier's own labelled units read a part that tells its classes apart.
if planted_scores():

    rule ground_truth:
        input:
            scores=planted_scores(),
            summary=f"{RESULTS}/concepts/unit_summary.parquet",
        output:
            f"{RESULTS}/validation/validation.json",
        log:
            f"{LOGS}/ground_truth.log",
        params:
            world=GENERATOR_WORLD,
            regions=REGION_SOURCE,
            code=stage_code("stages.world_truth"),
        threads: 1
        conda:
            CONDA_ENV
        script:
            "../scripts/ground_truth.py"


# How well the classifier's layer encodes each world factor, by linear probes of r.
if GENERATOR_WORLD:

    rule factor_encoding:
        input:
            latents=f"{RESULTS}/latents.zarr",
            activations=f"{RESULTS}/activations.zarr",
        output:
            f"{RESULTS}/concepts/factor_encoding.parquet",
        log:
            f"{LOGS}/factor_encoding.log",
        benchmark:
            f"{BENCHMARKS}/factor_encoding.tsv"
        params:
            encoding=config["factor_encoding"],
            generator=model_params("generator"),
            code=stage_code("stages.encoding"),
        threads: 2
        conda:
            CONDA_ENV
        script:
            "../scripts/factor_encoding.py"
