"""The OHIF Viewer at ``/viewer/``: installed from the pinned npm tarball (``install``), served
by the API with a generated ``app-config.js`` (``routes``); docs/desks.md."""
