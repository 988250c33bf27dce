"""4-bit NF4 bases through bitsandbytes for eval: the portable layer's functions (shared with the deployed
agents), with tiesmerge's one-line input error."""

from tiesmerge.errors import as_bad_input
from tiesmerge.portable import quant
from tiesmerge.portable.quant import repack_misfit, repacks_on_this_cpu  # noqa: F401  (part of eval's API)

nf4_kwargs = as_bad_input(quant.nf4_kwargs)
fit_cpu_kernels = as_bad_input(quant.fit_cpu_kernels)
