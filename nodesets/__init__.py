"""NodeSet2 files shipped with the gateway: its own types, device profiles and example sites."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
GATEWAY_TYPES = HERE / "gateway.types.xml"
GATEWAY_NAMESPACE = "urn:opcua-gateway:types"
