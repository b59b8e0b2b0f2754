"""Remote consultation (远程会诊): a clinic asks a team of specialists about a patient.

``model`` is the I/O-free state machine and scheduling rules, ``commands`` what users ask
for, ``service.execute`` applies a command in one transaction (document, bookings, events,
audit), ``queries`` the read side, ``reminders`` the timers (reminder, no-show).  See
``docs/consultation.md``.
"""
