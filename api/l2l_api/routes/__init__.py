"""One router per resource: health, families, jobs, optimizers."""
