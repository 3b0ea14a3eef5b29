"""Bringing images and labels in: folder scan, CSV, VOC/COCO, checks of every file."""
