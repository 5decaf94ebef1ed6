if config["tuning"]["adaptive"]["enabled"]:

    # Renders in looks against the null controls and measures as it goes, so this job writes
    # the chunk table itself and rule measure does not exist.
    rule perturb:
        input:
            latents=f"{RESULTS}/latents.zarr",
            activations=f"{RESULTS}/activations.zarr",
            link=f"{RESULTS}/link/model.pt",
            ranges=f"{RESULTS}/units/ranges.parquet",
            nulls=f"{RESULTS}/tables/null_controls.parquet",
            link_units=f"{RESULTS}/link/units.parquet",
            **segmentation_input(),
        output:
            table=f"{RESULTS}/tables/chunk-{{chunk}}.parquet",
            record=f"{RESULTS}/tables/chunk-{{chunk}}.adaptive.json",
            **({"renders": renders(f"{RESULTS}/renders/chunk-{{chunk}}.zarr")} if config["tuning"]["keep_renders"] else {}),
        log:
            f"{LOGS}/perturb/chunk-{{chunk}}.log",
        benchmark:
            f"{BENCHMARKS}/perturb/chunk-{{chunk}}.tsv"
        params:
            units=units_of_chunk,
            # The efficacy bound divides by every test of the run.
            total_units=len(selected_units()),
            steps=config["tuning"]["steps"],
            batch_size=config["tuning"]["batch_size"],
            adaptive=config["tuning"]["adaptive"],
            concepts={key: config["concepts"][key] for key in ("measures", "q", "min_effect")},
            **model_stage("stages.perturb_adaptive"),
        threads: CHUNK_THREADS
        resources:
            gpu=1,
        conda:
            CONDA_ENV
        script:
            "../scripts/perturb_adaptive.py"

else:

    rule perturb:
        input:
            latents=f"{RESULTS}/latents.zarr",
            activations=f"{RESULTS}/activations.zarr",
            link=f"{RESULTS}/link/model.pt",
            ranges=f"{RESULTS}/units/ranges.parquet",
            **segmentation_input(),
        output:
            renders(f"{RESULTS}/renders/chunk-{{chunk}}.zarr"),
        log:
            f"{LOGS}/perturb/chunk-{{chunk}}.log",
        benchmark:
            f"{BENCHMARKS}/perturb/chunk-{{chunk}}.tsv"
        params:
            units=units_of_chunk,
            steps=config["tuning"]["steps"],
            batch_size=config["tuning"]["batch_size"],
            **model_stage("stages.perturb"),
        threads: CHUNK_THREADS
        resources:
            gpu=1,
        conda:
            CONDA_ENV
        script:
            "../scripts/perturb.py"
