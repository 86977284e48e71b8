"""The service kit every service stands on (docs/architecture.md). No ML imports."""
