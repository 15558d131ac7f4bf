"""Training the project's own models (torch, CPU): the re-identification
embedder from the shipped ImageNet weights, and its adaptation to a user's
event. Needs the optional `train` extra (`pip install liveryid[train]`);
the sidecar never imports this package while serving."""
