"""The coordinatewise LSTM optimizer: its config, network and batched rollout."""

from l2l_plugin.optimizer.config import DEFAULT_GROUP, GroupRule, OptimizerNetConfig
from l2l_plugin.optimizer.network import LSTMOptimizerNet

__all__ = ["DEFAULT_GROUP", "GroupRule", "LSTMOptimizerNet", "OptimizerNetConfig"]
