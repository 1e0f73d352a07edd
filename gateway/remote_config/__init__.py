"""Remote configuration: the config reported to ThingsBoard, and connector / log level changes taken from it."""
