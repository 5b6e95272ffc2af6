"""Run framework: steps with declared inputs and outputs, a manifest each, cache hits and resume."""
