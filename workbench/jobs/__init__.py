"""Training jobs that outlive the page: queued here, run by a worker process.

>>> import workbench as wb
>>> job = wb.jobs.submit(project, "train", annotator="erin", mode="probe")   # returns at once
>>> job.state, job.progress, job.log_tail(), job.result   # read afresh at each access
>>> wb.jobs.list(project)                                  # a DataFrame, oldest first
>>> wb.jobs.cancel(job.id, annotator="erin")               # stops at the next batch

The queue is a SQLite file under the Loupe home (:mod:`workbench.jobs.records`), so every
process on the machine sees the same jobs. ``loupe worker`` runs them (``loupe serve``
starts one): one job per project at a time, each in its own process, resumed from the saved
training state after a worker restart (:mod:`workbench.jobs.worker`). ``loupe jobs PROJECT``
lists them. See docs/jobs.md.
"""

from workbench.errors import JobError
from workbench.jobs.queue import Job, cancel, get, list_jobs, submit

#: ``wb.jobs.list(project)``: the jobs of a project (:func:`list_jobs`).
list = list_jobs  # the name the API promises (shadows the builtin here only)

__all__ = ["Job", "JobError", "cancel", "get", "list", "list_jobs", "submit"]
