"""One photo: tiling at the training scale, the scan, its typed result and writer, overlays."""
