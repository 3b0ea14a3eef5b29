"""Widgets that guide the next step: the review curve."""
