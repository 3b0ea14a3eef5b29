"""Widgets that show an analysis: confusion, slices, the embedding map, compare."""
