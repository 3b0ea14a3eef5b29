"""Leaving the notebook: exports, the edge predictor, the dashboards server."""
