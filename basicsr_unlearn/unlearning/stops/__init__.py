"""Stop criteria, one module each (``*_stop.py``), registered in ``STOP_REGISTRY`` when this package is imported and
chosen in YAML as ``train.stop: {type: Name, **params}``."""
from basicsr_unlearn.registration import import_modules
from basicsr_unlearn.unlearning.stops.criterion import STOP_REGISTRY, StopCriterion

__all__ = ['STOP_REGISTRY', 'StopCriterion', *import_modules(__name__, __path__, '_stop')]
