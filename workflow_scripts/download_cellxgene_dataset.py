"""Rule download_cellxgene_dataset -> cellfate.sources.fetch.fetch_cellxgene_dataset."""

from cellfate.sources.fetch import fetch_cellxgene_dataset
from cellfate.workflow import run

p = snakemake.params
run(
    snakemake,
    lambda: fetch_cellxgene_dataset(snakemake.input.listing, p.dataset_id, snakemake.output[0], manifest_dir=p.manifest_dir,
                                    retries=p.retries, timeout=p.timeout, backoff=p.backoff),
)
