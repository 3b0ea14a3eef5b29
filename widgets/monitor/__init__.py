"""Widgets of the line: the drift monitor."""
