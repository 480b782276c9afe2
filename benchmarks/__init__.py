"""qengine benchmarks package."""
