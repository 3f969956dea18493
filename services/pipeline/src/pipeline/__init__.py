"""Pipeline service: sales org, pipelines and deals, orders, activities, tasks, forecasting,
funnel analytics and playbooks."""
