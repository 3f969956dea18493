"""Campaigns service:
segments, email campaigns, sequences, lead scoring, touchpoints, loyalty.
"""
