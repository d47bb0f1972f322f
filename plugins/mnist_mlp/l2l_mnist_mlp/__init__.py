"""MNIST multi-layer perceptron task family (Andrychowicz et al. 2016, section 3.2)."""

from l2l_mnist_mlp.family import MnistMlpFamily, normal_params
from l2l_mnist_mlp.network import ACTIVATIONS, MLP, Activation

__all__ = ["ACTIVATIONS", "MLP", "Activation", "MnistMlpFamily", "normal_params"]
