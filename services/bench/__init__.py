"""`lifeline bench`: the load benchmark on the local stack, with its same-run baseline."""
