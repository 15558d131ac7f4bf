"""Pipeline stages: each takes and returns plain numpy values."""
