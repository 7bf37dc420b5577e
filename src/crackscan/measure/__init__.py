"""Crack measurement: cracks as objects from a crack mask, their scale, width classes and limits."""
