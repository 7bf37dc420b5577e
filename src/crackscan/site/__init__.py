"""Your own site: tile truth from crack masks, label folders, the adaptation fits, adapt."""
