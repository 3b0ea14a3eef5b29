"""The line console's logic: what a line runs and how it got there, without drawing it.

>>> wb.line_status(p, line="A")        # LineStatus: deployment, frozen-set accuracy, last
...                                    # drift check, open training jobs
>>> wb.line_timeline(p, line="A")      # imports, drift checks, label edits, trainings,
...                                    # promotions, rollbacks: who and when, newest first
>>> wb.retrain_arguments(p, line="A")  # train keywords of the version the line runs

It sits above ``workbench.jobs`` and ``workbench.deploy`` (it reads both), below the CLI;
``widgets.LineConsole`` draws it (docs/line.md, "Line console").
"""

from workbench.line.status import LineStatus, changed_verdicts, line_status, retrain_arguments
from workbench.line.timeline import TIMELINE_COLUMNS, line_timeline

__all__ = ["TIMELINE_COLUMNS", "LineStatus", "changed_verdicts", "line_status",
           "line_timeline", "retrain_arguments"]
