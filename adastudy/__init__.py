"""adastudy: hyperparameter studies of cosine-softmax losses against AdaCos."""

from adastudy.errors import AdastudyError, ParameterError

__version__ = "0.1.0"

__all__ = ["AdastudyError", "ParameterError", "__version__"]
