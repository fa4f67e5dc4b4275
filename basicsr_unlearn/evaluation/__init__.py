"""Per-degradation metrics, membership inference and report tables/plots (no dependency on models/)."""
