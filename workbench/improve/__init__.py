"""Acting on the analysis: what to label next, the review curve, targeted synthesis."""
