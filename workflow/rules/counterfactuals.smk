# Counterfactual explanations per class pair (origin -> target) by the main method, the same
# samples searched by the methods of counterfactuals.compare, and their summary.
# COUNTERFACTUAL_OUTPUTS lists what rule all and the report need; it is empty without pairs.

COUNTERFACTUALS = config["counterfactuals"]
COUNTERFACTUAL_PAIRS = [f"{origin}-{target}" for origin, target in COUNTERFACTUALS["pairs"]]
COMPARED_METHODS = [method for method in COUNTERFACTUALS["compare"] if method != COUNTERFACTUALS["method"]]
COUNTERFACTUAL_COMPARISONS = {
    method: expand(f"{RESULTS}/counterfactuals/compare/{method}/{{pair}}.parquet", pair=COUNTERFACTUAL_PAIRS)
    for method in COMPARED_METHODS
}
COUNTERFACTUAL_OUTPUTS = (
    [
        *expand(f"{RESULTS}/counterfactuals/{{pair}}.parquet", pair=COUNTERFACTUAL_PAIRS),
        *expand(f"{RESULTS}/counterfactuals/{{pair}}.zarr", pair=COUNTERFACTUAL_PAIRS),
        *(path for paths in COUNTERFACTUAL_COMPARISONS.values() for path in paths),
        f"{RESULTS}/counterfactuals/summary.parquet",
        f"{RESULTS}/counterfactuals/summary_units.parquet",
        f"{RESULTS}/counterfactuals/summary.json",
    ]
    if COUNTERFACTUAL_PAIRS
    else []
)


# What a search of each method depends on: its own settings and the per-sample ones, not the
# summary's, so changing them or adding a pair re-runs no search.
COUNTERFACTUAL_SEARCH = {
    method: {
        "method": method,
        "search": COUNTERFACTUALS[method],
        **{key: COUNTERFACTUALS[key] for key in ("samples", "top_units", "batch_size")},
    }
    for method in (COUNTERFACTUALS["method"], *COMPARED_METHODS)
}


wildcard_constraints:
    origin=r"\d+",
    target=r"\d+",
    method=r"[a-z]+",


rule counterfactuals:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        link=f"{RESULTS}/link/model.pt",
        unit_summary=f"{RESULTS}/concepts/unit_summary.parquet",
        **segmentation_input(),
    output:
        table=f"{RESULTS}/counterfactuals/{{origin}}-{{target}}.parquet",
        images=directory(f"{RESULTS}/counterfactuals/{{origin}}-{{target}}.zarr"),
        panel=report(
            f"{RESULTS}/counterfactuals/{{origin}}-{{target}}.png",
            caption="../report/counterfactuals.rst",
            category="Counterfactuals",
            subcategory="{origin} to {target}",
        ),
    log:
        f"{LOGS}/counterfactuals/{{origin}}-{{target}}.log",
    params:
        counterfactuals=COUNTERFACTUAL_SEARCH[COUNTERFACTUALS["method"]],
        # The searches follow gradients in fp32 whatever the run's precision.
        **model_stage("stages.counterfactuals", precision="fp32"),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/counterfactuals.py"


rule counterfactual_comparison:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        link=f"{RESULTS}/link/model.pt",
        unit_summary=f"{RESULTS}/concepts/unit_summary.parquet",
        **segmentation_input(),
    output:
        table=f"{RESULTS}/counterfactuals/compare/{{method}}/{{origin}}-{{target}}.parquet",
        images=directory(f"{RESULTS}/counterfactuals/compare/{{method}}/{{origin}}-{{target}}.zarr"),
        panel=f"{RESULTS}/counterfactuals/compare/{{method}}/{{origin}}-{{target}}.png",
    log:
        f"{LOGS}/counterfactuals/compare/{{method}}/{{origin}}-{{target}}.log",
    params:
        counterfactuals=lambda wildcards: COUNTERFACTUAL_SEARCH[wildcards.method],
        # The searches follow gradients in fp32 whatever the run's precision.
        **model_stage("stages.counterfactuals", precision="fp32"),
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        CONDA_ENV
    script:
        "../scripts/counterfactuals.py"


rule counterfactual_summary:
    input:
        tables=expand(f"{RESULTS}/counterfactuals/{{pair}}.parquet", pair=COUNTERFACTUAL_PAIRS),
        images=expand(f"{RESULTS}/counterfactuals/{{pair}}.zarr", pair=COUNTERFACTUAL_PAIRS),
        comparisons=[path for paths in COUNTERFACTUAL_COMPARISONS.values() for path in paths],
        unit_summary=f"{RESULTS}/concepts/unit_summary.parquet",
    output:
        table=f"{RESULTS}/counterfactuals/summary.parquet",
        units=f"{RESULTS}/counterfactuals/summary_units.parquet",
        json=f"{RESULTS}/counterfactuals/summary.json",
    log:
        f"{LOGS}/counterfactual_summary.log",
    params:
        comparisons=COUNTERFACTUAL_COMPARISONS,
        n_boot=COUNTERFACTUALS["n_boot"],
        seed=COUNTERFACTUALS["seed"],
        top_measures=COUNTERFACTUALS["top_measures"],
        top_units=COUNTERFACTUALS["top_units"],
        world=GENERATOR_WORLD,
        code=stage_code("stages.counterfactuals"),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/counterfactual_summary.py"
