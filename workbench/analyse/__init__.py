"""What the data and a model version say: issues, confusion, slices, compare, maps."""
