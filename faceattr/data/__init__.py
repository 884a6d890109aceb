"""Data: image loading and region crops (regions), data-set manifests and validation (manifest)."""
