"""The model a line runs, kept current: :class:`Inspector` loads the deployment that the
line's pointer names, answers ``inspect`` calls, and swaps to a newly promoted deployment
between calls. A deployment that fails its checks is refused and the old one keeps
answering."""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from loupe_edge.deployment import DeploymentError, EdgeDeployment, read_pointer
from loupe_edge.predictor import EdgeDetector, EdgePredictor, load_model
from loupe_edge.stats import Familiarity, RollingDrift, gray_of, image_properties

#: Largest image side decoded (a 20,000 px image is a mistake, not a part).
MAX_PIXELS = 40_000_000


class BadImageError(ValueError):
    """The bytes are not an image this runtime can decode (the message says why)."""


def decode(data: bytes) -> np.ndarray:
    """RGB uint8 pixels (H, W, 3) of an encoded image, decoded as the workbench decodes
    files (Pillow, ``convert("RGB")``)."""
    if not data:
        raise BadImageError("the body is empty: send the image's bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise BadImageError(f"the image is {image.width}x{image.height} pixels; at "
                                    f"most {MAX_PIXELS:,} are decoded")
            return np.asarray(image.convert("RGB"))
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(f"not an image: {len(data):,} bytes in no format Pillow reads "
                            "(PNG, JPEG, BMP, TIFF, …)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # truncated, …
        raise BadImageError(f"not a readable image ({type(error).__name__}: {error})") from None


@dataclass
class LineModel:
    """One loaded, checked deployment."""

    deployment: EdgeDeployment
    model: EdgePredictor | EdgeDetector
    familiarity: Familiarity

    @classmethod
    def load(cls, deployment: EdgeDeployment) -> LineModel:
        """Load the model and check it: its classes are the record's, and it answers a
        probe image with finite probabilities."""
        try:
            model = load_model(deployment.model_path)
        except (OSError, ValueError) as error:
            raise DeploymentError(f"deployment {deployment.folder}: the model does not load "
                                  f"({error})") from None
        if deployment.classes and list(model.classes) != deployment.classes:
            raise DeploymentError(
                f"deployment {deployment.folder}: the model's classes {list(model.classes)} "
                f"disagree with {deployment.classes} in its deployment.json; promote anew")
        probe = np.full((1, 64, 64, 3), 128, dtype=np.uint8)
        try:
            out = model.predict_pixels(probe)
        except Exception as error:  # onnxruntime raises its own types
            raise DeploymentError(f"deployment {deployment.folder}: the model fails on a "
                                  f"probe image ({type(error).__name__}: {error})") from None
        first = out[0] if isinstance(out, tuple) else out
        if not np.all(np.isfinite(np.asarray(first, dtype=np.float64))):
            raise DeploymentError(f"deployment {deployment.folder}: the model answers a probe "
                                  "image with non-finite numbers")
        return cls(deployment, model, Familiarity(deployment.reference()))

    def inspect(self, pixels: np.ndarray) -> tuple[dict[str, Any], dict[str, float]]:
        """The verdict on one RGB image, and the image's statistics."""
        props = image_properties(gray_of(pixels))
        ood = self.familiarity.score(props)
        base = {"deployment_id": self.deployment.deployment_id,
                "version": self.deployment.version,
                "ood_score": None if ood != ood else round(ood, 4)}
        if isinstance(self.model, EdgeDetector):
            found = self.model.detect_pixels(pixels[None])[0]
            boxes = [{"label": self.model.classes[int(c)], "confidence": float(s),
                      **dict(zip("xywh", map(float, box), strict=True))}
                     for c, s, box in zip(found["labels"], found["scores"], found["boxes"],
                                          strict=True)]
            top = max(boxes, key=lambda b: b["confidence"], default=None)
            point = self.deployment.operating_point or {}
            if "threshold" in point:  # reject when the best box reaches the threshold
                reject = top is not None and top["confidence"] >= float(point["threshold"])
            else:
                reject = bool(boxes)
            return {**base, "label": top["label"] if top else None,
                    "confidence": top["confidence"] if top else None, "boxes": boxes,
                    "decision": "reject" if reject else "accept"}, props
        if getattr(self.model, "normal", None) is not None:  # an anomaly model
            score = float(self.model.predict_pixels(pixels[None])[0])
            point = self.deployment.operating_point or {}
            limit = float(point.get("anomaly_score_threshold") or self.model.threshold)
            flagged = score >= limit  # the cost-based point when one was chosen
            return {**base, "label": "anomaly" if flagged else self.model.normal,
                    "confidence": min(1.0, abs(score - limit) / max(limit, 1e-12)),
                    "anomaly_score": score, "threshold": limit,
                    "decision": "reject" if flagged else "accept"}, props
        probabilities = self.model.predict_pixels(pixels[None])[0]
        classes = list(self.model.classes)
        best = int(np.argmax(probabilities))
        return {**base, "label": classes[best], "confidence": float(probabilities[best]),
                "probabilities": {c: float(p) for c, p in zip(classes, probabilities,
                                                              strict=True)},
                "decision": self._decide(classes, probabilities, classes[best])}, props

    def _decide(self, classes: list[str], probabilities: np.ndarray, label: str) -> str:
        point = self.deployment.operating_point
        if not point or point.get("normal") not in classes or "threshold" not in point:
            return label  # no operating point: the label is the decision
        not_normal = 1.0 - float(probabilities[classes.index(point["normal"])])
        return "reject" if not_normal >= float(point["threshold"]) else "accept"


@dataclass
class Inspector:
    """What ``line`` of ``deployments_dir`` runs now, swapped in when the pointer changes.

    Parameters
    ----------
    deployments_dir : Path
        A project's ``deployments/`` folder (or a copy).
    line : str
    window : int, default 200
        Images in the rolling drift window.
    shadow : str, optional
        A deployment id of the line to run beside the current one on every image (a
        challenger: its verdict is added as ``shadow`` and the agreement is counted).
    on_event : callable, optional
        Called with a dict for each swap or refusal (``event``, ``deployment_id``,
        ``detail``).
    """

    deployments_dir: Path
    line: str
    window: int = 200
    shadow: str | None = None
    on_event: Callable[[dict[str, Any]], None] | None = None
    swaps: int = 0
    shadow_seen: int = 0
    shadow_agreed: int = 0
    events: deque = field(default_factory=lambda: deque(maxlen=20))

    def __post_init__(self) -> None:
        self.deployments_dir = Path(self.deployments_dir)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: str | None = None
        pointer = read_pointer(self.deployments_dir / self.line)
        if pointer is None:
            raise DeploymentError(f"line {self.line!r} has no current deployment in "
                                  f"{self.deployments_dir}: promote a version to it first")
        self.current = LineModel.load(EdgeDeployment.load(
            self.deployments_dir / self.line / pointer["deployment_id"]))
        self.drift = RollingDrift(self.current.familiarity, self.window)
        self.challenger = None if self.shadow is None else LineModel.load(
            EdgeDeployment.load(self.deployments_dir / self.line / self.shadow))

    @property
    def shadow_agreement(self) -> float:
        """Share of images on which the shadow gave the current deployment's decision."""
        return self.shadow_agreed / self.shadow_seen if self.shadow_seen else float("nan")

    # -- answering ------------------------------------------------------------------------
    def inspect(self, pixels: np.ndarray) -> dict[str, Any]:
        """The verdict on RGB pixels, by the deployment current when the call starts."""
        start = time.perf_counter()
        model = self.current  # one read: a swap meanwhile does not mix two models
        verdict, props = model.inspect(pixels)
        verdict["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
        shadow = None
        if self.challenger is not None:
            shadow, _ = self.challenger.inspect(pixels)
            shadow.pop("ood_score", None)
            shadow["agrees"] = shadow["decision"] == verdict["decision"]
            verdict["shadow"] = shadow
        with self._lock:
            if model is self.current:
                self.drift.add(props)
            if shadow is not None:
                self.shadow_seen += 1
                self.shadow_agreed += int(shadow["agrees"])
        return verdict

    def inspect_bytes(self, data: bytes) -> dict[str, Any]:
        return self.inspect(decode(data))

    # -- swapping ---------------------------------------------------------------------------
    def check_pointer(self) -> bool:
        """Load the deployment the pointer names if it is new; True when swapped."""
        try:
            pointer = read_pointer(self.deployments_dir / self.line)
        except DeploymentError as error:
            self._event("refused", None, str(error))
            return False
        if pointer is None:
            return False
        wanted = pointer["deployment_id"]
        if wanted == self.current.deployment.deployment_id or wanted == self._refused:
            return False
        try:
            loaded = LineModel.load(EdgeDeployment.load(self.deployments_dir / self.line
                                                        / wanted))
        except DeploymentError as error:
            self._refused = wanted
            self._event("refused", wanted, f"{error} The previous deployment "
                        f"{self.current.deployment.deployment_id} keeps serving.")
            return False
        with self._lock:
            previous = self.current.deployment.deployment_id
            self.current = loaded
            self.drift = RollingDrift(loaded.familiarity, self.window)
            self.swaps += 1
            self._refused = None
        self._event("swapped", wanted, f"from {previous}")
        return True

    def watch(self, interval_s: float = 0.5) -> None:
        """Check the pointer every ``interval_s`` seconds in a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.check_pointer()

        self._thread = threading.Thread(target=loop, name="loupe-edge-pointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _event(self, kind: str, deployment_id: str | None, detail: str) -> None:
        event = {"event": kind, "deployment_id": deployment_id, "detail": detail,
                 "time": time.time()}
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)


__all__ = ["MAX_PIXELS", "BadImageError", "Inspector", "LineModel", "decode"]
