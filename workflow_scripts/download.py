"""Download rules -> cellfate.sources.fetch.fetch_files (one call per rule, any number of files)."""

from cellfate.sources.fetch import fetch_files
from cellfate.workflow import run

p = snakemake.params
run(
    snakemake,
    lambda: fetch_files(p.urls, dict(snakemake.output.items()), manifest_dir=p.manifest_dir, source=p.source,
                        label=p.label, retries=p.retries, timeout=p.timeout, backoff=p.backoff),
)
