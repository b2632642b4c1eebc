"""The console's screens, one per module, imported when first shown."""
