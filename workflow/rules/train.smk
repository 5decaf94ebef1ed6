# Retrain the builtin shapes-world models (classifier, generator, attribute probe) from
# scratch: `snakemake --cores 2 train_default_models`. The weights and manifests land in
# results/default_models/; to use them, point a model spec at them
# ({kind: builtin, name: shapes-classifier, weights: results/default_models/shapes-classifier.pt})
# or copy them over the shipped ones in pipeline/models/weights/.
# Config: default_models: {seed: 0, train: {<overrides of DEFAULT_CONFIG>}} (schema defaults).

import json
import os

DEFAULT_MODELS_DIR = "results/default_models"


rule train_default_models:
    output:
        classifier=multiext(f"{DEFAULT_MODELS_DIR}/shapes-classifier", ".pt", ".json"),
        generator=multiext(f"{DEFAULT_MODELS_DIR}/shapes-generator", ".pt", ".json"),
        probe=multiext(f"{DEFAULT_MODELS_DIR}/shapes-probe", ".pt", ".json"),
    log:
        "logs/train_default_models.log",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.classifier[0]),
        seed=config["default_models"]["seed"],
        overrides=json.dumps(config["default_models"]["train"], sort_keys=True),
    threads: 2
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.models.builtin.train --out-dir {params.out_dir:q} --seed {params.seed}"
        " --threads {threads} --config-json {params.overrides:q} > {log:q} 2>&1"
