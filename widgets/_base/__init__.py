"""What every widget shares: project source, colours, drill-down charts, the review queue,
and the front-end files in ``static/``."""

from pathlib import Path

#: The widgets' JavaScript and CSS.
STATIC = Path(__file__).resolve().parent / "static"
