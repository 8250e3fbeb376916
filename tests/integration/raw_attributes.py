"""Read and Write of one attribute as a client sends them (asyncua's service calls, no Node helpers), so a test
sees the server's status codes as they are."""

from __future__ import annotations

from asyncua import Client, ua


async def read_attribute(client: Client, nodeid: ua.NodeId, attribute: ua.AttributeIds) -> object:
    """The attribute's value; the read must be Good."""
    params = ua.ReadParameters()
    params.NodesToRead = [ua.ReadValueId(NodeId=nodeid, AttributeId=attribute)]
    dv = (await client.uaclient.read(params))[0]
    assert dv.StatusCode is None or dv.StatusCode.is_good(), dv.StatusCode
    return dv.Value.Value


async def write_attribute(client: Client, nodeid: ua.NodeId, variant: ua.Variant,
                          attribute: ua.AttributeIds = ua.AttributeIds.Value) -> int:
    """The status code of the write."""
    params = ua.WriteParameters()
    params.NodesToWrite = [ua.WriteValue(NodeId=nodeid, AttributeId=attribute, Value=ua.DataValue(variant))]
    return (await client.uaclient.write(params))[0].value
