"""Data in: the review/item schema, landing files, the synthetic generator and importers."""
