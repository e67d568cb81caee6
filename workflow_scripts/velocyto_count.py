"""Rule velocyto_count -> cellfate.velocity.velocyto.run_velocyto (inputs checked first)."""

from cellfate.velocity.velocyto import run_velocyto
from cellfate.workflow import run

inp = snakemake.input
run(snakemake, lambda: run_velocyto(
    inp.bam, inp.gtf, snakemake.output[0], sample_id=snakemake.wildcards.name,
    barcodes=inp.get("barcodes"), mask=inp.get("mask"), samtools_threads=snakemake.threads,
    samtools_memory_mb=snakemake.params.samtools_memory_mb,
))
