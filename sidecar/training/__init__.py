"""Training the project's own models (torch, CPU): the re-identification
embedder from the shipped ImageNet weights, and the detector's vehicle head
from the COCO NanoDet. Needs the optional `train` extra (`pip install liveryid[train]`);
the sidecar never imports this package while serving."""
