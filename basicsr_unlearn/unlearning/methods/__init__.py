"""One module per unlearning method; each registers its class in ``METHOD_REGISTRY`` when this package is imported,
so a new file here is a new ``train.method.type``."""
from basicsr_unlearn.registration import import_modules

__all__ = import_modules(__name__, __path__, '')
