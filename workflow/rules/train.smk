# Retrain the builtin models of one procedural world (classifier, generator, attribute probe)
# from scratch: `snakemake --cores 2 train_default_models`. The world is
# default_models.world: "breeds" (the default) or "shapes". The weights and manifests land in
# results/default_models/<world>-{classifier,generator,probe}.{pt,json}; to use them, point a
# model spec at them ({kind: builtin, name: breeds-generator, weights: results/default_models/breeds-generator.pt})
# or copy them over the shipped ones in pipeline/models/weights/.
# Config: default_models: {world: breeds, seed: 0, train: {<overrides of the world's training config>}}.

import json
import os

DEFAULT_MODELS_DIR = "results/default_models"
DEFAULT_MODELS_WORLD = config["default_models"]["world"]


rule train_default_models:
    output:
        classifier=multiext(f"{DEFAULT_MODELS_DIR}/{DEFAULT_MODELS_WORLD}-classifier", ".pt", ".json"),
        generator=multiext(f"{DEFAULT_MODELS_DIR}/{DEFAULT_MODELS_WORLD}-generator", ".pt", ".json"),
        probe=multiext(f"{DEFAULT_MODELS_DIR}/{DEFAULT_MODELS_WORLD}-probe", ".pt", ".json"),
    log:
        "logs/train_default_models.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.classifier[0]),
        world=DEFAULT_MODELS_WORLD,
        seed=config["default_models"]["seed"],
        overrides=json.dumps(config["default_models"]["train"], sort_keys=True),
    threads: 2
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.models.builtin.train --out-dir {params.out_dir:q} --world {params.world}"
        " --seed {params.seed} --threads {threads} --config-json {params.overrides:q} > {log:q} 2>&1"
