"""Two-way referral (双向转诊) with reserved capacity, and result mutual recognition (结果互认).

``model`` is the I/O-free state machine and rules (slots, green channel, plans), ``service.execute``
applies a command in one transaction (referral, slot, events, audit), ``capacity`` publishes and
books the slots upper hospitals reserve for the consortium, ``sweeps`` the timers (escalation,
release, no-show), ``recognition`` the 互认 catalogue and its gate.  See ``docs/referral.md``.
"""
