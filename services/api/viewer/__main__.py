"""``python -m services.api.viewer [--tarball FILE] [--dir DIR] [--force]``: install the OHIF Viewer."""

import sys

from .install import main

sys.exit(main())
