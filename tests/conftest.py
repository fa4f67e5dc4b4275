"""Shared fixtures. The plugin is imported before anything of basicsr (torchvision alias)."""
import basicsr_unlearn  # noqa: F401  (must come first)
