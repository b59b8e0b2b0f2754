"""The township edge (前置机): a local DICOM node for a clinic's modalities, a durable forward
queue to the centre over HTTPS (STOW-RS), and its status.  See docs/edge.md."""
