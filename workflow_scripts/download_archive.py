"""Rule download_archive -> cellfate.sources.fetch.fetch_archive (a .tar.gz unpacked as a folder)."""

from cellfate.sources.fetch import fetch_archive
from cellfate.workflow import run

p = snakemake.params
run(
    snakemake,
    lambda: fetch_archive(p.url, snakemake.output[0], manifest_dir=p.manifest_dir, source=p.source, label=p.label,
                          retries=p.retries, timeout=p.timeout, backoff=p.backoff),
)
