"""Commissions service:
plans, quotas, attainment, statements, leaderboards, disputes, period close.
"""
