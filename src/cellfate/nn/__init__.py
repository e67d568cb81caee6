"""The model parts VICDYF, DeepCOLOR and the environment fits share: layers, likelihoods, the
standard-normal KL, Adam, one training loop and one device resolver.

A base package: it imports no stage, so every stage can build on it. Submodules are imported
where used (``from cellfate.nn.likelihoods import nb_log_prob``); this file imports nothing, so
that loading one part does not load the others.
"""
