"""The ThingsBoard MQTT gateway-API link: publishing stored events and receiving downlink traffic."""
from gateway.northbound.client import DownlinkHandler, Northbound

__all__ = ["DownlinkHandler", "Northbound"]
