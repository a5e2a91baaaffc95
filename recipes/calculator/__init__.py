"""The calculator showcase: data from the real agents, DPO pairs, and the eval (a recipe, not trainer code)."""
