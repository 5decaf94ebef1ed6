# Counterfactual explanations per class pair (origin -> target), and their summary.
# COUNTERFACTUAL_OUTPUTS lists what rule all and the report need; it is empty without pairs.

# Keys of the counterfactual slice that only the summary reads: changing them, or adding a
# pair, re-runs no search.
SUMMARY_ONLY_KEYS = ("pairs", "n_boot", "seed")

COUNTERFACTUAL_PAIRS = [f"{origin}-{target}" for origin, target in config["counterfactuals"]["pairs"]]
COUNTERFACTUAL_OUTPUTS = (
    [
        *expand(f"{RESULTS}/counterfactuals/{{pair}}.parquet", pair=COUNTERFACTUAL_PAIRS),
        *expand(f"{RESULTS}/counterfactuals/{{pair}}.zarr", pair=COUNTERFACTUAL_PAIRS),
        f"{RESULTS}/counterfactuals/summary.parquet",
        f"{RESULTS}/counterfactuals/summary.json",
    ]
    if COUNTERFACTUAL_PAIRS
    else []
)


wildcard_constraints:
    origin=r"\d+",
    target=r"\d+",


rule counterfactuals:
    input:
        latents=f"{RESULTS}/latents.zarr",
        activations=f"{RESULTS}/activations.zarr",
        link=f"{RESULTS}/link/model.pt",
        unit_summary=f"{RESULTS}/concepts/unit_summary.parquet",
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
        counterfactuals={k: v for k, v in config["counterfactuals"].items() if k not in SUMMARY_ONLY_KEYS},
        device=config["device"],
        classifier=model_params("classifier"),
        generator=model_params("generator"),
        code=stage_code("counterfactual"),
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
        unit_summary=f"{RESULTS}/concepts/unit_summary.parquet",
    output:
        table=f"{RESULTS}/counterfactuals/summary.parquet",
        json=f"{RESULTS}/counterfactuals/summary.json",
    log:
        f"{LOGS}/counterfactual_summary.log",
    params:
        n_boot=config["counterfactuals"]["n_boot"],
        seed=config["counterfactuals"]["seed"],
        code=stage_code("counterfactual"),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/counterfactual_summary.py"
