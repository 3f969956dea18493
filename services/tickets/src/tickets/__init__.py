"""Tickets service:
support tickets, routing, SLA with business hours, knowledge base, CSAT and NPS.
"""
