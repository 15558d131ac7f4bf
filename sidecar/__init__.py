"""liveryid sidecar: vehicle detection and re-identification over JSON-RPC on stdio."""

__version__ = "0.1.0"
