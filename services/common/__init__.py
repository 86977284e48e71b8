"""Shared service kit: settings, logging, errors, tenancy, server bootstrap. No ML imports."""
