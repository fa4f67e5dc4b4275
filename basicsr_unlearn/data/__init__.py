"""Modules named `*_dataset.py` here register with BasicSR when this package is imported."""
from basicsr_unlearn.registration import import_modules

__all__ = import_modules(__name__, __path__, '_dataset')
