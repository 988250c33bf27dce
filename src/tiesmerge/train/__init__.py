"""Train small LoRA specialists (the demo's and `tiesmerge adapters train`); above eval, whose prompts and
scoring it shares."""
