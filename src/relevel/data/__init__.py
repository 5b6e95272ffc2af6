"""Data layer: level scales, typed records, readers, document templates and validation."""
