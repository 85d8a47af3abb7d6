"""Reports written from analysis results: plots and tables (one module per analysis)."""
