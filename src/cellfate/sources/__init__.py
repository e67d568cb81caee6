"""Public data sources: downloading (resumable, checksummed, atomic) and readers to AnnData."""
