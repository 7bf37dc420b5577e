"""The inspection report of a finished survey: HTML pages, a PDF, and the photos on a map (GeoJSON)."""
