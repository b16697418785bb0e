"""margin_risk/tools/local package."""
