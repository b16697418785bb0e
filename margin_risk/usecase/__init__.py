"""The enforcement use case: one MSK batch in, committed decisions out, behind ports."""
