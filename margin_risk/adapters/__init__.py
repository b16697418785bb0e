"""margin_risk/adapters package."""
