"""qengine worker package."""
