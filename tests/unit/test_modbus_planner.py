"""Read coalescing per scan class under device limits, and the function code of writes."""

from __future__ import annotations

import pytest

from gateway.drivers.modbus.address import DeviceOptions
from gateway.drivers.modbus.planner import (
    BlockItem,
    PointSpan,
    ReadBlock,
    WriteRequest,
    plan_reads,
    plan_write,
    span_for,
)

OPTS = DeviceOptions(host="h")


def hr(key: int, offset: int, count: int = 1, scan: str = "MediumSpeed") -> PointSpan:
    return PointSpan(key, "holding", offset, count, scan)


def covered(blocks: list[ReadBlock]) -> dict[int, tuple[str, int, int]]:
    """Every point's (table, absolute offset, count) as the blocks place it; asserts nothing is split."""
    where: dict[int, tuple[str, int, int]] = {}
    for b in blocks:
        for item in b.items:
            assert 0 <= item.offset and item.offset + item.count <= b.count, (b, item)
            assert item.key not in where, f"point {item.key} planned twice"
            where[item.key] = (b.table, b.start + item.offset, item.count)
    return where


def test_adjacent_points_make_one_request() -> None:
    plan = plan_reads([hr(1, 0, 2), hr(2, 2, 2), hr(3, 4, 1)], OPTS)
    assert plan == {"MediumSpeed": [ReadBlock("holding", 0, 5, [BlockItem(1, 0, 2), BlockItem(2, 2, 2),
                                                                  BlockItem(3, 4, 1)])]}
    assert plan["MediumSpeed"][0].function_code == 3


def test_input_order_does_not_matter() -> None:
    points = [hr(3, 4), hr(1, 0, 2), hr(2, 2, 2)]
    assert plan_reads(points, OPTS) == plan_reads(sorted(points, key=lambda p: p.offset), OPTS)


def test_gap_zero_splits_at_holes_and_gap_spans_them() -> None:
    points = [hr(1, 0, 2), hr(2, 5, 2), hr(3, 20)]
    assert [(b.start, b.count) for b in plan_reads(points, OPTS)["MediumSpeed"]] == [(0, 2), (5, 2), (20, 1)]
    gap3 = DeviceOptions(host="h", gap=3)
    blocks = plan_reads(points, gap3)["MediumSpeed"]
    assert [(b.start, b.count) for b in blocks] == [(0, 7), (20, 1)]
    assert blocks[0].items == [BlockItem(1, 0, 2), BlockItem(2, 5, 2)]
    gap2 = DeviceOptions(host="h", gap=2)  # the hole is 3 registers: one more than allowed
    assert len(plan_reads(points, gap2)["MediumSpeed"]) == 3
    gap13 = DeviceOptions(host="h", gap=13)
    assert [(b.start, b.count) for b in plan_reads(points, gap13)["MediumSpeed"]] == [(0, 21)]


def test_exactly_125_registers_is_one_request_and_126_is_two() -> None:
    points = [hr(i, i) for i in range(125)]
    blocks = plan_reads(points, OPTS)["MediumSpeed"]
    assert [(b.start, b.count) for b in blocks] == [(0, 125)]
    blocks = plan_reads([*points, hr(125, 125)], OPTS)["MediumSpeed"]
    assert [(b.start, b.count) for b in blocks] == [(0, 125), (125, 1)]
    assert covered(blocks)[125] == ("holding", 125, 1)


def test_a_point_is_never_split_across_blocks() -> None:
    # 62 floats (124 registers), then a float at 124..125 that would cross the 125 limit.
    points = [hr(i, 2 * i, 2) for i in range(63)]
    blocks = plan_reads(points, OPTS)["MediumSpeed"]
    assert [(b.start, b.count) for b in blocks] == [(0, 124), (124, 2)]
    assert covered(blocks) == {i: ("holding", 2 * i, 2) for i in range(63)}


def test_a_point_of_exactly_the_limit_fits_and_a_larger_one_is_refused() -> None:
    assert plan_reads([hr(1, 10, 125)], OPTS)["MediumSpeed"] == [ReadBlock("holding", 10, 125, [BlockItem(1, 0, 125)])]
    with pytest.raises(ValueError, match="point 2: spans 126 registers, more than one read of 125 allows"):
        plan_reads([hr(2, 0, 126)], OPTS)
    small = DeviceOptions(host="h", max_read_registers=10)
    with pytest.raises(ValueError, match="more than one read of 10 allows"):
        plan_reads([hr(3, 0, 12)], small)


def test_configured_register_limit() -> None:
    small = DeviceOptions(host="h", max_read_registers=10)
    blocks = plan_reads([hr(i, i) for i in range(25)], small)["MediumSpeed"]
    assert [(b.start, b.count) for b in blocks] == [(0, 10), (10, 10), (20, 5)]


def test_bits_limit_is_2000() -> None:
    coils = [PointSpan(i, "coil", i, 1) for i in range(2001)]
    blocks = plan_reads(coils, OPTS)["MediumSpeed"]
    assert [(b.table, b.start, b.count, b.function_code) for b in blocks] == [("coil", 0, 2000, 1),
                                                                              ("coil", 2000, 1, 1)]
    inputs = [PointSpan(i, "discrete", i, 1) for i in range(2000)]
    blocks = plan_reads(inputs, OPTS)["MediumSpeed"]
    assert [(b.table, b.count, b.function_code) for b in blocks] == [("discrete", 2000, 2)]
    # registers stay at 125 even though bits allow 2000
    assert len(plan_reads([PointSpan(i, "input", i, 1) for i in range(200)], OPTS)["MediumSpeed"]) == 2


def test_tables_are_never_mixed() -> None:
    points = [PointSpan(1, "holding", 0, 1), PointSpan(2, "input", 0, 1), PointSpan(3, "input", 1, 1),
              PointSpan(4, "coil", 0, 1), PointSpan(5, "discrete", 0, 1), PointSpan(6, "holding", 1, 1)]
    blocks = plan_reads(points, OPTS)["MediumSpeed"]
    assert [(b.table, b.start, b.count, [i.key for i in b.items]) for b in blocks] == [
        ("coil", 0, 1, [4]), ("discrete", 0, 1, [5]), ("input", 0, 2, [2, 3]), ("holding", 0, 2, [1, 6])]
    assert [b.function_code for b in blocks] == [1, 2, 4, 3]


def test_overlapping_points_share_registers() -> None:
    # Two bits of one status word, a float and its high word read as a short, a duplicate binding.
    points = [hr(1, 10), hr(2, 10), hr(3, 11, 2), hr(4, 11), hr(5, 11, 2)]
    blocks = plan_reads(points, OPTS)["MediumSpeed"]
    assert len(blocks) == 1 and (blocks[0].start, blocks[0].count) == (10, 3)
    assert covered(blocks) == {1: ("holding", 10, 1), 2: ("holding", 10, 1), 3: ("holding", 11, 2),
                               4: ("holding", 11, 1), 5: ("holding", 11, 2)}


def test_a_long_point_does_not_break_the_block_around_it() -> None:
    # A 100-register string at 50 next to short points 0..119: the shorts stay in one request.
    points = [hr(i, i) for i in range(120)] + [hr(999, 50, 100)]
    blocks = plan_reads(points, OPTS)["MediumSpeed"]
    assert len(blocks) == 2
    assert [(b.start, b.count) for b in blocks] == [(0, 120), (50, 100)]
    assert sorted(covered(blocks)) == [*range(120), 999]


def test_scan_classes_are_planned_separately() -> None:
    points = [hr(1, 0, scan="HighSpeed"), hr(2, 1, scan="LowSpeed"), hr(3, 1, scan="HighSpeed"),
              hr(4, 0, scan="LowSpeed"), hr(5, 300, scan="HighSpeed")]
    plan = plan_reads(points, OPTS)
    assert set(plan) == {"HighSpeed", "LowSpeed"}
    assert [(b.start, b.count, [i.key for i in b.items]) for b in plan["HighSpeed"]] == [(0, 2, [1, 3]),
                                                                                        (300, 1, [5])]
    assert [(b.start, b.count, [i.key for i in b.items]) for b in plan["LowSpeed"]] == [(0, 2, [4, 2])]


def test_fewest_requests_on_a_large_map() -> None:
    # 1000 consecutive registers of mixed widths: the lower bound is ceil(1000 / 125) = 8 requests.
    points, offset, key = [], 0, 0
    widths = [1, 2, 4, 2, 1, 1, 2]
    while offset < 1000:
        width = min(widths[key % len(widths)], 1000 - offset)
        points.append(hr(key, offset, width))
        offset, key = offset + width, key + 1
    blocks = plan_reads(points, OPTS)["MediumSpeed"]
    assert len(blocks) <= 9  # whole points only: at most one more than the bound
    assert all(b.count <= 125 for b in blocks)
    assert len(covered(blocks)) == len(points)


def test_empty_plan() -> None:
    assert plan_reads([], OPTS) == {}


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (PointSpan(1, "register", 0, 1), "point 1: unknown Modbus table 'register'"),
        (PointSpan(2, "holding", 0, 0), "point 2: spans 0 registers"),
        (PointSpan(3, "holding", 65535, 2), "point 3: offset 65535 + 2 is outside the Modbus address range"),
        (PointSpan(4, "coil", 0, 2001), "point 4: spans 2001 bits, more than one read of 2000 allows"),
    ],
)
def test_bad_points_are_named(point: PointSpan, message: str) -> None:
    with pytest.raises(ValueError) as err:
        plan_reads([point], OPTS)
    assert message in str(err.value)


def test_span_for_resolves_address_and_type() -> None:
    assert span_for(7, "40001", "xsd:float", OPTS, scan_class="HighSpeed") == PointSpan(7, "holding", 0, 2,
                                                                                        "HighSpeed")
    one_based = DeviceOptions(host="h", addressing=1)
    assert span_for(8, "input/10", "xsd:string", one_based, length=9) == PointSpan(8, "input", 9, 5)
    assert span_for(9, "coil/3", "xsd:boolean", OPTS) == PointSpan(9, "coil", 3, 1)
    with pytest.raises(ValueError, match="run past 65535"):
        span_for(10, "holding/65535", "xsd:int", OPTS)
    with pytest.raises(ValueError, match="must be xsd:boolean"):
        span_for(11, "coil/3", "xsd:float", OPTS)


def test_write_function_6_uses_fc06_for_one_register_and_fc16_for_more() -> None:
    fc6 = DeviceOptions(host="h", write_function=6)
    assert plan_write("holding", 10, [5], fc6) == WriteRequest(6, "holding", 10, [5])
    assert plan_write("holding", 10, [1, 2], fc6) == WriteRequest(16, "holding", 10, [1, 2])
    assert plan_write("coil", 3, [True], fc6) == WriteRequest(5, "coil", 3, [1])
    assert plan_write("coil", 3, [True, False, 1], fc6) == WriteRequest(15, "coil", 3, [1, 0, 1])


def test_write_function_16_always_uses_the_multiple_write() -> None:
    fc16 = DeviceOptions(host="h", write_function=16)
    assert plan_write("holding", 10, [5], fc16).function_code == 16
    assert plan_write("holding", 10, [1, 2, 3, 4], fc16) == WriteRequest(16, "holding", 10, [1, 2, 3, 4])
    assert plan_write("coil", 0, [False], fc16) == WriteRequest(15, "coil", 0, [0])


def test_writes_are_limited_and_never_split() -> None:
    assert plan_write("holding", 0, [0] * 123, OPTS).function_code == 16
    with pytest.raises(ValueError, match="write of 124 registers exceeds max_write_registers 123"):
        plan_write("holding", 0, [0] * 124, OPTS)
    with pytest.raises(ValueError, match="write of 3 registers exceeds max_write_registers 2"):
        plan_write("holding", 0, [0] * 3, DeviceOptions(host="h", max_write_registers=2))
    assert plan_write("coil", 0, [1] * 1968, OPTS).function_code == 15
    with pytest.raises(ValueError, match="write of 1969 coils exceeds max_write_bits 1968"):
        plan_write("coil", 0, [1] * 1969, OPTS)


@pytest.mark.parametrize(
    ("table", "offset", "values", "message"),
    [
        ("input", 0, [1], "input registers are read-only; only holding registers and coils take writes"),
        ("discrete", 0, [1], "discrete inputs are read-only"),
        ("register", 0, [1], "unknown Modbus table 'register'"),
        ("holding", 0, [], "nothing to write"),
        ("holding", 65535, [1, 2], "outside the Modbus address range"),
        ("holding", 0, [70000], "register value 70000 is not a 16-bit unsigned integer"),
        ("holding", 0, [-1], "register value -1 is not a 16-bit"),
    ],
)
def test_bad_writes_are_refused(table: str, offset: int, values: list[int], message: str) -> None:
    with pytest.raises(ValueError) as err:
        plan_write(table, offset, values, OPTS)
    assert message in str(err.value)
