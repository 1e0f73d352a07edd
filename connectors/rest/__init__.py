"""The REST connector: HTTP endpoints per rest.json mapping, basic/anonymous security, downlink relays."""
