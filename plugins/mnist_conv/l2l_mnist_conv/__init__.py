"""Small convolutional-network task family on MNIST or CIFAR-10 (Andrychowicz et al. 2016, section 3.3)."""

from l2l_mnist_conv.cifar10 import CIFAR10_FILES, Cifar10DataError, cifar10_image_set, load_cifar10
from l2l_mnist_conv.family import MnistConvFamily
from l2l_mnist_conv.network import ACTIVATIONS, ConvNet, conv_net_params

__all__ = [
    "ACTIVATIONS",
    "CIFAR10_FILES",
    "Cifar10DataError",
    "ConvNet",
    "MnistConvFamily",
    "cifar10_image_set",
    "conv_net_params",
    "load_cifar10",
]
