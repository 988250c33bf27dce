"""Device selection: the portable layer's rule, with tiesmerge's one-line input error."""

from tiesmerge.errors import as_bad_input
from tiesmerge.portable import devices

resolve_device = as_bad_input(devices.resolve_device)
