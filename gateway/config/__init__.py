"""Config loading and validation: the general gateway config and the connector configs it names."""
