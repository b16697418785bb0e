"""emr_jobs package."""
