"""`tiesmerge demo`: real specialists on the embedded base, merged five ways (TIES, task arithmetic, the subspace
method in core space, its refined version, PEFT's ties_svd — also with its RSLoRA scale corrected) and evaluated
end to end."""
