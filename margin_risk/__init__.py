"""margin_risk: the shared margin, stress and enforcement core (no AWS calls in here)."""

__version__ = "0.1.0"
