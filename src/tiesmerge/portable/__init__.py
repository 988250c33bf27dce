"""The portable layer: code that runs without tiesmerge installed.

`tiesmerge deploy` copies this folder, unchanged, into a tournament work directory as `agents/runtime/`, where
it runs with the Python of the tournament's image (transformers 4.46, peft 0.17, bitsandbytes 0.45) as well as
with today's releases. So every module here imports only the standard library, torch, transformers, peft,
bitsandbytes and yaml, and its siblings by relative import (tests/test_layers.py checks this); the rest of
tiesmerge builds on it (eval scores with the same prompt the answer agent uses).
"""
