"""ThingsBoard's HTTP device API (``/api/v1/$ACCESS_TOKEN/...``) served by the REST connector."""
