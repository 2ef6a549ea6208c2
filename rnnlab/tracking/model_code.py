"""The file ``rnnlab.model`` logs as MLflow "model from code": loading the model runs this file
instead of unpickling a Python object, so a logged rnnlab model holds no pickle at all."""

from mlflow.models import set_model

from rnnlab.tracking.pyfunc import CharRNNModel

set_model(CharRNNModel())
