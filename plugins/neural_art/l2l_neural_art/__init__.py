"""Neural-art task family (Andrychowicz et al. 2016, section 3.4) without downloads: random conv features, procedural images."""

from l2l_neural_art.family import NeuralArtFamily, NeuralArtStack, NeuralArtTask, Objective
from l2l_neural_art.features import features, gram, random_filters
from l2l_neural_art.images import HELD_OUT_STYLES, STYLES, TRAINING_STYLES, content_image, style_image

__all__ = [
    "HELD_OUT_STYLES",
    "STYLES",
    "TRAINING_STYLES",
    "NeuralArtFamily",
    "NeuralArtStack",
    "NeuralArtTask",
    "Objective",
    "content_image",
    "features",
    "gram",
    "random_filters",
    "style_image",
]
