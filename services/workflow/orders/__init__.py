"""Exam requests (申请管理): the order a clinic creates before the scan, the Modality Worklist
item it becomes, and the reading request it turns into when the modality is done.
See docs/orders.md."""
