"""Downlink of the REST connector: ThingsBoard attribute updates and RPC relayed to HTTP targets."""
