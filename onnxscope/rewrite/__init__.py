"""The rewriter: the analysis of which tensors carry the probe, the one walk over the needed nodes
(driver), the contexts rules see, the rule registry and rules/, graph clean-ups."""
