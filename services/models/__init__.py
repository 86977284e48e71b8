"""The managed model store: base models imported once, checksummed, shared by services."""
