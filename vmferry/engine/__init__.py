"""Migration engine: job state machines, convergence policy, the live migration loop."""
