"""qengine czar package."""
