"""qengine catalogs package."""
