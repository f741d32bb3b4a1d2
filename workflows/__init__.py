"""Shipped playbooks, templates, examples and the workflow JSON Schema (package data)."""
