"""The event log and the ERP change feed (`GET /v1/changes`); see `log`, `api`, `retention`."""
