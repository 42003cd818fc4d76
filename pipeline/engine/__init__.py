"""Engine: the vLLM wrapper, watchdog, tensor-parallel planner."""
