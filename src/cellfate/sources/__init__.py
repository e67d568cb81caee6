"""Downloads of the public data sources and readers for their file formats."""
