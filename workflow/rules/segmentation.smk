# Part regions from a few-shot segmenter on the generator's own features. Without one
# (segmentation.labels: none, or auto with a non-builtin generator) the regions come from
# the classifier's saliency and these rules do not run.

if SEGMENTATION_LABELS == WORLD:

    rule segmentation_labels:
        output:
            directory(f"{RESULTS}/segmentation/labels"),
        log:
            f"{LOGS}/segmentation_labels.log",
        params:
            renders=config["segmentation"]["train"] + config["segmentation"]["held_out"],
            seed=config["segmentation"]["seed"],
            classes=config["classes"],
            truncation=config["samples"]["truncation"],
            generator=model_params("generator"),
            code=stage_code("segmentation"),
        threads: MODEL_THREADS
        conda:
            CONDA_ENV
        script:
            "../scripts/segmentation_labels.py"


if SEGMENTATION_LABELS:

    rule segmentation:
        input:
            labels=segmentation_labels_dir(),
        output:
            model=f"{RESULTS}/segmentation/model.pt",
            metrics=report(
                f"{RESULTS}/segmentation/metrics.json",
                caption="../report/segmentation_metrics.rst",
                category="Segmentation",
            ),
        log:
            f"{LOGS}/segmentation.log",
        params:
            segmentation=config["segmentation"],
            device=config["device"],
            generator=model_params("generator"),
            code=stage_code("segmentation"),
        threads: MODEL_THREADS
        resources:
            gpu=1,
        conda:
            CONDA_ENV
        script:
            "../scripts/segmentation.py"
