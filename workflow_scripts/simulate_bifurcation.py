"""Rule simulate_bifurcation -> cellfate.simulate.demo.bifurcation (the .bai comes with the BAM)."""

from cellfate.simulate import demo
from cellfate.workflow import run

out = snakemake.output
run(snakemake, lambda: demo.bifurcation(snakemake.params.sim, out.truth, out.bam, out.gtf, out.barcodes))
