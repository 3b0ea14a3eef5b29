"""Widgets that write labels: the grid, the box labeler, issue queues, the label book."""
