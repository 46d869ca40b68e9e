"""The library under the scripts, in layers whose imports only run downwards; docs/architecture.md
is the map (each package's one job, where each concept lives, the rules a change must keep)."""
