"""Self-contained HTML reports: one file, inline CSS and SVG plots, nothing loaded from anywhere."""
