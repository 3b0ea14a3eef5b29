"""Pascal VOC XML and COCO JSON box files: reading, checking and writing (no store access).

Pixel conventions:

* VOC: ``xmin, ymin, xmax, ymax`` are 1-based and inclusive (the first pixel is 1, a box
  over the whole 200 px wide image is ``1..200``). Relative ``x = (xmin - 1) / width`` and
  ``w = (xmax - xmin + 1) / width``; written back as ``xmin = round(x * width) + 1``,
  ``xmax = round((x + w) * width)``, so a round trip is exact for whole-pixel boxes and
  within one pixel for any box. ``xmin = 0`` (0-based writers) is read as the image edge.
* COCO: ``bbox = [x, y, w, h]`` in absolute pixels from the top-left corner.

Every error names the file and the field (``crazing_1.xml: object[2].bndbox.xmax: …``,
``coco.json: annotations[7].category_id: …``) so a person can fix the file.
"""

from __future__ import annotations

import json
import math
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ElementTree, ParseError, SubElement, indent

try:  # refuses entity expansion and external entities outright
    from defusedxml.ElementTree import fromstring as _xml_fromstring
except ImportError:  # pragma: no cover - stdlib expat >= 2.4 also limits entity expansion
    from xml.etree.ElementTree import fromstring as _xml_fromstring

from workbench.errors import LoupeError
from workbench.store.boxes import Box, check_bounding_box

#: File name endings taken for images when matching annotations to files.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
#: Largest annotation file read, in bytes.
MAX_ANNOTATION_BYTES = 50_000_000
#: Pixels a COCO box may reach past the image border (float rounding of exporters).
COCO_EDGE_SLACK = 1e-3


class BoxFileError(LoupeError, ValueError):
    """An annotation file (or one of its fields) that cannot be used; the message names it."""


@dataclass
class PixelBox:
    """A box in absolute pixels as an annotation file gives it (VOC corners or COCO bbox)."""

    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    where: str


@dataclass
class BoxRecord:
    """One image's boxes as an annotation file describes them."""

    source: str  # the annotation file (and entry) the record came from
    filename: str | None
    width: int | None
    height: int | None
    boxes: list[PixelBox] = field(default_factory=list)
    convention: str = "voc"  # "voc": 1-based inclusive corners; "coco": 0-based x, y, w, h
    error: str | None = None  # why the image's boxes cannot be used (the image is rejected)


# -- VOC -------------------------------------------------------------------------------------
def _annotation_bytes(path: Path) -> bytes:
    """An annotation file's bytes: a regular file (a FIFO or a device would block or never
    end) of at most :data:`MAX_ANNOTATION_BYTES`; :class:`BoxFileError` otherwise."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise BoxFileError(f"{path.name}: not a regular file (FIFO/device/socket); not read")
        if info.st_size > MAX_ANNOTATION_BYTES:
            raise BoxFileError(f"{path.name}: larger than {MAX_ANNOTATION_BYTES} bytes")
        return path.read_bytes()
    except OSError as err:
        raise BoxFileError(f"{path.name}: cannot be read ({err.strerror or err})") from None


def read_voc(path: Path) -> BoxRecord:
    """Read one Pascal VOC XML file.

    Raises
    ------
    BoxFileError
        Malformed XML, or a missing or non-numeric field, named with the file.
    """
    path = Path(path)
    name = path.name
    data = _annotation_bytes(path)
    try:
        root = _xml_fromstring(data)
    except ParseError as err:
        raise BoxFileError(f"{name}: malformed XML ({err})") from None
    except Exception as err:  # defusedxml's entity refusals
        raise BoxFileError(f"{name}: refused XML ({type(err).__name__}: {err})") from None
    if root.tag != "annotation":
        raise BoxFileError(f"{name}: root element is <{root.tag}>, expected <annotation>")
    filename = _text(root, "filename")
    width = height = None
    size = root.find("size")
    if size is not None and _text(size, "width") is not None:
        width = _positive_int(size, "width", f"{name}: size")
        height = _positive_int(size, "height", f"{name}: size")
    boxes = []
    for index, obj in enumerate(root.findall("object")):
        where = f"{name}: object[{index}]"
        label = _text(obj, "name")
        if not label:
            raise BoxFileError(f"{where}.name: missing (the class of the box)")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise BoxFileError(f"{where}.bndbox: missing")
        x0, y0, x1, y1 = (_number(bndbox, k, f"{where}.bndbox")
                          for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(PixelBox(label, x0, y0, x1, y1, f"{where}.bndbox"))
    return BoxRecord(source=name, filename=filename, width=width, height=height, boxes=boxes,
                     convention="voc")


def _text(node: Element, tag: str) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _number(node: Element, tag: str, where: str) -> float:
    text = _text(node, tag)
    if text is None:
        raise BoxFileError(f"{where}.{tag}: missing")
    try:
        value = float(text)
    except ValueError:
        raise BoxFileError(f"{where}.{tag}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise BoxFileError(f"{where}.{tag}: {text!r} is not a finite number")
    return value


def _positive_int(node: Element, tag: str, where: str) -> int:
    value = _number(node, tag, where)
    if value <= 0 or value != int(value):
        raise BoxFileError(f"{where}.{tag}: {value:g} is not a positive whole number")
    return int(value)


def write_voc(path: Path, *, filename: str, width: int, height: int, depth: int,
              boxes: Sequence[Mapping]) -> Path:
    """Write one VOC XML file for an image of ``width`` × ``height`` with relative boxes."""
    root = Element("annotation")
    SubElement(root, "folder").text = Path(path).parent.name
    SubElement(root, "filename").text = filename
    size = SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", depth)):
        SubElement(size, tag).text = str(int(value))
    SubElement(root, "segmented").text = "0"
    for box in boxes:
        xmin, ymin, xmax, ymax = relative_to_voc(box["bounding_box"], width, height)
        obj = SubElement(root, "object")
        SubElement(obj, "name").text = box["label"]
        for tag, value in (("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            SubElement(obj, tag).text = value
        bndbox = SubElement(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            SubElement(bndbox, tag).text = str(value)
    tree = ElementTree(root)
    indent(tree)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=False)
    return path


def relative_to_voc(bounding_box: Sequence[float], width: int,
                    height: int) -> tuple[int, int, int, int]:
    """Relative ``[x, y, w, h]`` as VOC's 1-based inclusive ``xmin, ymin, xmax, ymax``."""
    x, y, w, h = bounding_box
    xmin, ymin = round(x * width) + 1, round(y * height) + 1
    xmax = min(max(round((x + w) * width), xmin), width)
    ymax = min(max(round((y + h) * height), ymin), height)
    return min(xmin, width), min(ymin, height), xmax, ymax


# -- COCO ------------------------------------------------------------------------------------
def read_coco(path: Path) -> tuple[list[BoxRecord], list[tuple[str, str]], list[str]]:
    """Read a COCO detection JSON file.

    Returns
    -------
    (records, rejected, categories)
        One record per image (its ``filename`` is COCO's ``file_name``; images with no
        annotation have no boxes; an image with any bad annotation has ``error`` set and
        must be rejected whole, so no partial box set is stored), ``(entry, reason)`` for
        each unusable image entry or annotation that names no image, and the category
        names in file order.

    Raises
    ------
    BoxFileError
        A file that is not readable JSON, or lacks the ``images``, ``annotations`` or
        ``categories`` lists.
    """
    path = Path(path)
    name = path.name
    try:
        data = json.loads(_annotation_bytes(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BoxFileError(f"{name}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise BoxFileError(f"{name}: expected a JSON object with images, annotations and "
                           f"categories, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BoxFileError(f"{name}: '{key}' must be a list (COCO detection format)")
    return parse_coco(data, name)


def parse_coco(data: Mapping[str, Any], name: str = "coco.json"
               ) -> tuple[list[BoxRecord], list[tuple[str, str]], list[str]]:
    """Check a loaded COCO document; see :func:`read_coco` (``name`` is used in reasons)."""
    rejected: list[tuple[str, str]] = []
    categories: dict[Any, str] = {}
    for index, cat in enumerate(data["categories"]):
        where = f"{name}: categories[{index}]"
        if not isinstance(cat, Mapping) or "id" not in cat:
            raise BoxFileError(f"{where}.id: missing")
        label = cat.get("name")
        if not isinstance(label, str) or not label.strip() or label != label.strip():
            raise BoxFileError(f"{where}.name: {label!r} is not a valid class name")
        if cat["id"] in categories:
            raise BoxFileError(f"{where}.id: {cat['id']!r} is used twice")
        categories[cat["id"]] = label
    records: dict[Any, BoxRecord] = {}
    for index, image in enumerate(data["images"]):
        where = f"{name}: images[{index}]"
        problem = _coco_image_problem(image, where)
        if problem is None and image["id"] in records:
            problem = f"{where}.id: {image['id']!r} is used twice"
        if problem:
            rejected.append((where, problem))
            continue
        records[image["id"]] = BoxRecord(
            source=f"{name}: images[{index}]", filename=image["file_name"],
            width=image.get("width"), height=image.get("height"), convention="coco")
    bad_images: dict[Any, str] = {}
    for index, ann in enumerate(data["annotations"]):
        where = f"{name}: annotations[{index}]"
        if not isinstance(ann, Mapping):
            rejected.append((where, f"{where}: expected an object"))
            continue
        image_id = ann.get("image_id")
        if image_id not in records:
            rejected.append((where, f"{where}.image_id: {image_id!r} is not in images"))
            continue
        try:
            records[image_id].boxes.append(_coco_box(ann, categories, where))
        except BoxFileError as err:
            bad_images.setdefault(image_id, str(err))
    for image_id, reason in bad_images.items():
        records[image_id].error = reason
    return list(records.values()), rejected, list(dict.fromkeys(categories.values()))


def _coco_image_problem(image: Any, where: str) -> str | None:
    if not isinstance(image, Mapping):
        return f"{where}: expected an object"
    if "id" not in image:
        return f"{where}.id: missing"
    if not isinstance(image.get("file_name"), str) or not image["file_name"].strip():
        return f"{where}.file_name: missing"
    for key in ("width", "height"):
        value = image.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            return f"{where}.{key}: {value!r} is not a positive whole number"
    return None


def _coco_box(ann: Mapping, categories: Mapping[Any, str], where: str) -> PixelBox:
    if ann.get("category_id") not in categories:
        raise BoxFileError(f"{where}.category_id: {ann.get('category_id')!r} is not in "
                           "categories")
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise BoxFileError(f"{where}.bbox: expected [x, y, w, h], got {bbox!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in bbox):
        raise BoxFileError(f"{where}.bbox: {bbox!r} holds something that is not a number")
    x, y, w, h = (float(v) for v in bbox)
    return PixelBox(categories[ann["category_id"]], x, y, x + w, y + h, f"{where}.bbox")


def coco_document(images: Sequence[Mapping], classes: Sequence[str]) -> dict[str, Any]:
    """A COCO detection document.

    Parameters
    ----------
    images : sequence of mappings
        ``file_name``, ``width``, ``height`` and ``boxes`` (relative, as stored) per image.
    classes : sequence of str
        Category names; ids are 1, 2, … in this order.
    """
    ids = {label: number for number, label in enumerate(classes, start=1)}
    out_images, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        width, height = int(image["width"]), int(image["height"])
        out_images.append({"id": image_id, "file_name": image["file_name"], "width": width,
                           "height": height})
        for box in image["boxes"]:
            x, y, w, h = box["bounding_box"]
            bbox = [round(x * width, 3), round(y * height, 3), round(w * width, 3),
                    round(h * height, 3)]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": ids[box["label"]], "bbox": bbox,
                                "area": round(bbox[2] * bbox[3], 3), "iscrowd": 0})
    return {"info": {"description": "exported by Loupe"}, "licenses": [],
            "images": out_images, "annotations": annotations,
            "categories": [{"id": i, "name": c, "supercategory": "defect"}
                           for c, i in ids.items()]}


# -- both ------------------------------------------------------------------------------------
def relative_boxes(record: BoxRecord, width: int, height: int) -> list[Box]:
    """A record's boxes relative to an image of ``width`` × ``height`` pixels.

    Raises
    ------
    BoxFileError
        The declared size differs from the image's, or a box lies outside the image or has
        no area; the message names the file and the box.
    """
    if record.width is not None and (record.width, record.height) != (width, height):
        raise BoxFileError(f"{record.source}: size {record.width}x{record.height} differs "
                           f"from the image's {width}x{height}")
    out = []
    for box in record.boxes:
        if record.convention == "voc":
            x0, y0 = max(box.x0, 1.0) - 1, max(box.y0, 1.0) - 1
            x1, y1 = box.x1, box.y1
            slack, fields = 0.0, ("xmin", "ymin", "xmax", "ymax")
        else:
            x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
            slack, fields = COCO_EDGE_SLACK, ("x", "y", "x + w", "y + h")
        for name, value, limit in ((fields[0], box.x0, width), (fields[1], box.y0, height),
                                   (fields[2], box.x1, width), (fields[3], box.y1, height)):
            if value < 0 or value > limit + slack:
                side = "width" if name[0] == "x" else "height"
                raise BoxFileError(f"{box.where}.{name}: {value:g} is outside the image "
                                   f"({side} {limit})")
        if x1 <= x0 or y1 <= y0:
            raise BoxFileError(f"{box.where}: box has no area (its max corner is not past "
                               "its min corner)")
        x1, y1 = min(x1, width), min(y1, height)
        try:
            relative = check_bounding_box(
                [x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height],
                where=box.where)
        except ValueError as err:
            raise BoxFileError(str(err)) from None
        out.append({"label": box.label, "bounding_box": relative})
    return out
