"""margin_risk/local package."""
