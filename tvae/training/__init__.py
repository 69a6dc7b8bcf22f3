"""Training: the objective (beta, free bits, loss weights), the step, schedules, logs."""
