"""Developer tools: the demo against the emulated tenant."""
