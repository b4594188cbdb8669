"""Kiln: run work in containers on other people's machines."""
