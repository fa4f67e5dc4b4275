"""Unlearning: the method contract (``method.py``), one module per method (``methods/``), stop criteria
(``stops/``), the divergence guard and the hooks that run them in any AllInOneModel subclass."""
