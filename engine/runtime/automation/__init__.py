"""Automation: rule, routing, SLA, cadence and intake decisions applied inside the write that caused them."""
