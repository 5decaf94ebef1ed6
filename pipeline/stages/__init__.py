"""One module per workflow stage; each exposes one function that a Snakemake rule calls.

Stage functions take paths and plain values (the rule's config slice), never Snakemake
objects, so they run the same from a rule, a test or a notebook.
"""
