"""Installs rest-gateway: the daemon, its connectors, converters and bundled extensions."""
from setuptools import find_packages, setup

setup(
    name="rest-gateway",
    version="0.1.0",
    description="IoT gateway: legacy HTTP devices to ThingsBoard over the MQTT gateway API, durably",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["gateway*", "connectors*", "converters*", "extensions*"]),
    package_data={"connectors.rest": ["*.json", "README.md"], "gateway.config": ["*.json"],
                  "gateway.admin": ["templates/*.html"]},
    install_requires=[
        "flask>=3.0",
        "waitress>=3.0",
        "jsonpath-ng>=1.6",
        "requests>=2.31",
        "regex>=2023.0",
        "pyyaml>=6.0",
        "paho-mqtt>=2.0,<3",
        "jsonschema>=4.18",
        # ThingsBoard's CoAP device API; <0.5: coap/acks.py hooks one internal method of 0.4's message manager
        "aiocoap>=0.4.17,<0.5",
        "prometheus-client>=0.17",
        "jinja2>=3.1",  # the admin status page template (already installed with Flask; imported directly)
    ],
    extras_require={
        # selenium drives Debian's chromium + chromedriver for the status page test (tests/e2e/test_status_page.py);
        # psutil measures the daemon's memory in tests/e2e/test_coap_many_observers.py (amqtt pulls it in,
        # but only as its own dependency)
        "test": ["pytest>=8", "amqtt>=0.11", "ruff>=0.5", "hypothesis>=6", "selenium>=4.15", "psutil>=5.9"],
    },
    entry_points={"console_scripts": ["rest-gateway=gateway.cli:main"]},
)
