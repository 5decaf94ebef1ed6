"""Parts of every render, from the generator's own features (few-shot segmentation).

A small pixel classifier on hooked synthesis-layer outputs (:mod:`.features`,
:mod:`.model`), trained on K labelled renders of a labels folder (:mod:`.labels`,
:mod:`.train`), labels every render of the pipeline while it is synthesised, so the
regions never depend on the classifier that is being explained.
"""

from pipeline.segmentation.features import GeneratorFeatures
from pipeline.segmentation.labels import PALETTE, LabelsError, LabelSet, read_labels, write_labels_folder
from pipeline.segmentation.model import GeneratorSegmenter, PixelClassifier, load_pixel_classifier
from pipeline.segmentation.train import train_segmenter, world_labels

__all__ = [
    "PALETTE",
    "GeneratorFeatures",
    "GeneratorSegmenter",
    "LabelSet",
    "LabelsError",
    "PixelClassifier",
    "load_pixel_classifier",
    "read_labels",
    "train_segmenter",
    "world_labels",
    "write_labels_folder",
]
