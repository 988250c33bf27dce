"""Names of the floating dtypes tiesmerge reads and writes, shared by recipes, eval and examples."""

import torch

FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
