"""The Kiln provider runtime: a hub session that runs activities as hardened Docker containers."""
