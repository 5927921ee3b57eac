"""labeldistill: distill a dataset into soft labels for a few real base images."""
