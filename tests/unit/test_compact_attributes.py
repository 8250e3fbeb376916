"""A node's compact attributes behave as asyncua's dict of AttributeValues, and nodes sharing a layout and
DataValues stay independent."""

from __future__ import annotations

import pytest
from asyncua import ua

from gateway.nodeset.nodedata import CompactAttributes, CompactAttributeValue, attribute_value

A = ua.AttributeIds
SHARED = ua.DataValue(ua.Variant(5, ua.VariantType.Byte))


def _pair() -> tuple[CompactAttributes, CompactAttributes]:
    layout = {A.AccessLevel: 0, A.Value: 1}
    return (CompactAttributes(layout, [SHARED, ua.DataValue(ua.Variant(1.0))]),
            CompactAttributes(layout, [SHARED, ua.DataValue(ua.Variant(2.0))]))


def test_an_attribute_asked_for_is_this_nodes_own_and_stays_so() -> None:
    a, b = _pair()
    assert a.peek(A.AccessLevel) is SHARED and b.peek(A.AccessLevel) is SHARED
    av = a[A.AccessLevel]
    assert av.value is SHARED and a[A.AccessLevel] is av and a.get(A.AccessLevel) is av
    av.value = ua.DataValue(ua.Variant(1, ua.VariantType.Byte))  # asyncua's write replaces the DataValue
    av.datachange_callbacks[1] = print
    assert a.peek(A.AccessLevel).Value.Value == 1
    assert b.peek(A.AccessLevel) is SHARED and b[A.AccessLevel].datachange_callbacks == {}
    assert SHARED.Value.Value == 5


def test_the_mapping_answers_as_a_dict_does() -> None:
    a, _ = _pair()
    assert A.Value in a and A.DisplayName not in a and a.get(A.DisplayName) is None
    with pytest.raises(KeyError):
        a[A.DisplayName]
    a[A.DisplayName] = CompactAttributeValue(ua.DataValue(ua.Variant(ua.LocalizedText("x"))))
    assert list(a) == [A.AccessLevel, A.Value, A.DisplayName] and len(a) == 3
    del a[A.AccessLevel]
    assert A.AccessLevel not in a and a.peek(A.AccessLevel) is None and len(a) == 2
    with pytest.raises(KeyError):
        del a[A.AccessLevel]


def test_set_initial_fills_the_layout_or_adds_an_attribute() -> None:
    a, b = _pair()
    dv = ua.DataValue(ua.Variant(3.0))
    a.set_initial(A.Value, dv)
    assert a.peek(A.Value) is dv and b.peek(A.Value).Value.Value == 2.0
    a[A.Value].value_callback = None  # asked for: from now on the AttributeValue is the attribute
    a.set_initial(A.Value, ua.DataValue(ua.Variant(4.0)))
    assert a[A.Value].value.Value.Value == 4.0
    a.set_initial(A.Description, ua.DataValue(ua.Variant(ua.LocalizedText("d"))))
    assert attribute_value(type("N", (), {"attributes": a})(), A.Description).Value.Value.Text == "d"
