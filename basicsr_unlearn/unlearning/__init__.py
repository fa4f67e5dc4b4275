"""Unlearning methods that have their own logic beyond a loss (one module per method)."""
