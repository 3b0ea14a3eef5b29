"""``loupe-edge``: the line-side commands.

::

    loupe-edge serve DEPLOYMENTS_DIR --line A [--port 8900] [--ip 127.0.0.1] [--token T]
                     [--shadow DEPLOYMENT_ID]
    loupe-edge watch DEPLOYMENTS_DIR INCOMING_DIR --line A --out OUT_DIR [--shadow ID]
    loupe-edge predict MODEL IMAGE [IMAGE ...]

Exit status: 0 done, 1 an image could not be read (predict), 2 a usage or deployment error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from loupe_edge.deployment import DeploymentError

#: Addresses that need no token (this machine only).
LOCAL = ("127.0.0.1", "localhost", "::1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loupe-edge", description="Loupe on the line.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the line's current deployment over HTTP")
    serve.add_argument("deployments", help="a project's deployments/ folder (or a copy)")
    serve.add_argument("--line", default="A", help="the production line (default A)")
    serve.add_argument("--port", type=int, default=8900)
    serve.add_argument("--ip", default="127.0.0.1",
                       help="address to listen on; any but 127.0.0.1 needs --token")
    serve.add_argument("--token", default=os.environ.get("LOUPE_EDGE_TOKEN"),
                       help="required as 'Authorization: Bearer T' (or $LOUPE_EDGE_TOKEN)")
    serve.add_argument("--max-body-mb", type=float, default=20.0)
    serve.add_argument("--poll", type=float, default=0.5,
                       help="seconds between looks at the line's pointer (default 0.5)")
    serve.add_argument("--shadow", metavar="DEPLOYMENT_ID",
                       help="run this deployment of the line beside the current one")
    watch = commands.add_parser("watch", help="inspect the images landing in a folder")
    watch.add_argument("deployments", help="a project's deployments/ folder (or a copy)")
    watch.add_argument("incoming", help="the folder the camera writes into")
    watch.add_argument("--line", default="A")
    watch.add_argument("--out", required=True,
                       help="verdicts/ (JSON lines) and feedback/ (doubtful images) go here")
    watch.add_argument("--min-confidence", type=float, default=0.6,
                       help="images answered with less confidence are sent back (0.6)")
    watch.add_argument("--max-ood", type=float, default=0.99,
                       help="images at least this unfamiliar are sent back (0.99)")
    watch.add_argument("--poll", type=float, default=0.5)
    watch.add_argument("--shadow", metavar="DEPLOYMENT_ID",
                       help="run this deployment of the line beside the current one")
    predict = commands.add_parser("predict", help="one JSON line per image")
    predict.add_argument("model")
    predict.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "predict":
        from loupe_edge.predictor import main as predict_main

        return predict_main([args.model, *args.images])
    if args.command == "watch":
        return _watch(args)
    return _serve(args)


def _watch(args: argparse.Namespace) -> int:
    import json
    import signal
    import threading

    from loupe_edge.runtime import Inspector
    from loupe_edge.watch import Doubt, Watcher

    try:
        inspector = Inspector(args.deployments, args.line, shadow=args.shadow, on_event=_say)
        watcher = Watcher(inspector, args.incoming, args.out,
                          Doubt(args.min_confidence, args.max_ood),
                          on_verdict=lambda r: print(json.dumps(r, default=str), flush=True))
    except (DeploymentError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    inspector.watch(args.poll)
    watcher.start()
    print(f"loupe-edge: watching {args.incoming} with {inspector.current.deployment.version} "
          f"of line {args.line}; verdicts in {watcher.log.path}", file=sys.stderr, flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
        inspector.stop()
    return 0


def _say(event: dict) -> None:
    print(f"loupe-edge: {event['event']} {event['deployment_id']}: {event['detail']}",
          file=sys.stderr, flush=True)


def _serve(args: argparse.Namespace) -> int:
    if args.ip not in LOCAL and not args.token:
        print(f"error: --ip {args.ip} makes the model reachable from other machines; give "
              "--token T (or set LOUPE_EDGE_TOKEN) so that only callers with it are "
              "answered", file=sys.stderr)
        return 2
    import uvicorn

    from loupe_edge.runtime import Inspector
    from loupe_edge.server import create_app

    try:
        inspector = Inspector(args.deployments, args.line, shadow=args.shadow, on_event=_say)
    except DeploymentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    deployment = inspector.current.deployment
    print(f"loupe-edge: line {args.line} runs {deployment.version} "
          f"({deployment.deployment_id}) on http://{args.ip}:{args.port}/v1/inspect",
          file=sys.stderr, flush=True)
    inspector.watch(args.poll)
    app = create_app(inspector, token=args.token, max_body=int(args.max_body_mb * 1024 * 1024))
    try:
        uvicorn.run(app, host=args.ip, port=args.port, log_level="warning")
    finally:
        inspector.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
