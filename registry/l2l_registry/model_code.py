"""The pyfunc's code, logged as "models from code": MLflow stores and runs this file instead
of pickling a Python object, so loading works with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false.
The optimizer itself is the ``optimizer`` artifact (JSON + safetensors), read in
``load_context``."""

from mlflow.models import set_model

from l2l_registry.pyfunc_model import LearnedOptimizerModel

set_model(LearnedOptimizerModel())
