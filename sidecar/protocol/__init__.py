"""The JSON-RPC protocol: messages (declared once), wire framing, dispatch."""
