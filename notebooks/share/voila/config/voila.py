"""Voila configuration for Loupe's dashboards (``workbench.deploy.serve`` passes this folder as
``--Voila.config_file_paths``).

Pages load only the front-end extensions they use: the review app shows no plotly chart,
so its page skips the 4.7 MB plotly extension (the largest script of the page), which
shortens the time to the first interactive widget.
"""

from workbench.deploy.serve import page_config_hook

c = get_config()  # noqa: F821 (provided by traitlets when Voila loads this file)
c.VoilaConfiguration.page_config_hook = page_config_hook
