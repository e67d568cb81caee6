"""The corpus: harmonisation and QC of every sample, gene medians and rank-value tokenization."""
