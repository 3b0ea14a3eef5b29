"""Loupe on the line: run, serve and keep current the models a Loupe workbench promotes.

Needs onnxruntime, numpy, Pillow, Starlette with uvicorn, watchdog and prometheus-client;
no torch, no FiftyOne, no pandas (``pip install loupe-edge``).

>>> from loupe_edge import EdgePredictor, Inspector
>>> EdgePredictor("casing-v3.onnx").predict(["part.png"])[0]["label"]
>>> Inspector("deployments/", "A").inspect_bytes(open("part.png", "rb").read())["decision"]
"""

from loupe_edge.deployment import DeploymentError, EdgeDeployment, current_deployment
from loupe_edge.predictor import EdgeDetector, EdgePredictor, load_model, read_rgb
from loupe_edge.runtime import BadImageError, Inspector, LineModel, decode

__version__ = "0.1.0"

__all__ = ["BadImageError", "DeploymentError", "EdgeDeployment", "EdgeDetector",
           "EdgePredictor", "Inspector", "LineModel", "current_deployment", "decode",
           "load_model", "read_rgb"]
