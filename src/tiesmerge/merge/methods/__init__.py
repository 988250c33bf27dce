"""One merge method per file; `tiesmerge.merge.registry` maps names to them."""
