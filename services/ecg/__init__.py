"""The ECG reading view: decode DICOM waveforms, measure them (pre-read), draw the 12-lead sheet.

``waveform`` (PS3.3 C.10.9 decoding), ``measure`` (NeuroKit2), ``sheet`` (SVG and PNG),
``prioritise`` (thresholds -> priority raise) are free of I/O; ``load`` reads an
instance's blob.  The API routes are ``services.api.routes.ecg``; the subscriber that raises
priorities is ``services.workflow.ecg_triage``.
"""
