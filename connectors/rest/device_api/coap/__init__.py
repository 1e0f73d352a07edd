"""ThingsBoard's CoAP device API (``coap://host/api/v1/$ACCESS_TOKEN/...``): a second front of the device
API, served by aiocoap over UDP in an asyncio loop of its own thread (server.py)."""
