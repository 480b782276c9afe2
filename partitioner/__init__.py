"""qengine partitioner package."""
