"""See inside a network: first-layer filters, feature maps, Grad-CAM and the receptive field of every layer,
for classification, detection and segmentation checkpoints and the VGG19 that style transfer uses; and how easily
it is fooled (`measure_robustness`: the test metric under FGSM and PGD at each ε)."""

from visionkit.explain.cam import grad_cam, overlay
from visionkit.explain.features import (
    default_layers,
    feature_map_figure,
    feature_maps,
    filter_grid_figure,
    first_conv_filters,
    list_layers,
)
from visionkit.explain.receptive_field import LayerRow, layer_table, table_markdown
from visionkit.explain.report import Explanation, Heatmap, explain_image
from visionkit.explain.robustness import RobustnessOptions, RobustnessResult, measure_robustness
from visionkit.explain.robustness_plots import flips_figure, robustness_figure
from visionkit.explain.subjects import Subject, subject_from_checkpoint, vgg19_subject

__all__ = [
    "Explanation",
    "Heatmap",
    "LayerRow",
    "RobustnessOptions",
    "RobustnessResult",
    "Subject",
    "default_layers",
    "explain_image",
    "feature_map_figure",
    "feature_maps",
    "filter_grid_figure",
    "first_conv_filters",
    "flips_figure",
    "grad_cam",
    "layer_table",
    "list_layers",
    "measure_robustness",
    "overlay",
    "robustness_figure",
    "subject_from_checkpoint",
    "table_markdown",
    "vgg19_subject",
]
