"""The microservice chassis: infrastructure every service shares, and no domain code."""
