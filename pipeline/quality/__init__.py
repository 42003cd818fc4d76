"""Quality: the golden check and FP8 emulation."""
