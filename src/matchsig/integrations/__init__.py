"""Faces onto other toolkits (layer 5): :mod:`.pyterrier`."""
