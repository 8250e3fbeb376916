"""The drivers' tables in docs/bindings.md, written from their declarations.

Between `<!-- BEGIN driver-schemes -->` and its END marker: one row per registered driver. Between
`<!-- BEGIN driver-options SCHEME -->` and its END: that driver's connection options and binding
properties. `python -m gateway.drivers.reference docs/bindings.md` rewrites them in place; a test
fails when the file differs from what the declarations give, so a driver's documentation cannot
drift from what it accepts. Everything outside the markers is prose, kept as written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gateway.drivers.base import Driver
from gateway.drivers.options import Option
from gateway.drivers.registry import driver_for, known_schemes

_BLOCK = re.compile(r"(<!-- BEGIN (driver-schemes|driver-options [^ ]+) -->\n)(.*?)(<!-- END \2 -->)", re.S)
COMMON_PROPERTIES = ("FieldAddress", "FieldType", "Scale", "Offset", "ScanClass", "Deadband")


def drivers() -> list[type[Driver]]:
    """Each registered driver once, in the order of its first scheme."""
    seen: dict[type[Driver], None] = {}
    for scheme in known_schemes():
        seen.setdefault(driver_for(scheme))  # type: ignore[arg-type]
    return sorted(seen, key=lambda d: d.schemes[0])


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def schemes_table() -> str:
    rows = ["| scheme | Connection | options |", "|---|---|---|"]
    for d in drivers():
        schemes = ", ".join(f"`{s}`" for s in d.schemes)
        rows.append(f"| {schemes} | {d.connection_form or '(undocumented)'} | "
                    f"[{d.schemes[0]} options](#{anchor(d)}) |")
    return "\n".join(rows) + "\n"


def anchor(driver: type[Driver]) -> str:
    return "options-of-" + re.sub(r"[^a-z0-9-]", "", driver.schemes[0].lower())


def _default(o: Option) -> str:
    if o.default_text:
        return o.default_text
    text = o.describe_default()
    return text if text == "none" else f"`{text}`"


def options_block(driver: type[Driver]) -> str:
    out = [f'<a id="{anchor(driver)}"></a>', ""]
    if driver.connection_options:
        out += ["Connection options (query string):", "", "| option | values | default | meaning |",
                "|---|---|---|---|"]
        out += [f"| `{o.key}` | {o.describe_values()} | {_default(o)} | {_cell(o.doc)} |"
                for o in driver.connection_options]
    else:
        out.append("Connection options: none.")
    out.append("")
    if driver.point_options:
        out += [f"Binding properties of its variables, besides {', '.join(f'`{p}`' for p in COMMON_PROPERTIES)}:",
                "", "| property | YAML key | DataType | values | default | meaning |", "|---|---|---|---|---|---|"]
        out += [f"| `{o.prop}` | `{o.key}` | {o.datatype} | {o.describe_values()} | {_default(o)} | {_cell(o.doc)} |"
                for o in driver.point_options]
    else:
        out.append(f"Binding properties: only the common ones ({', '.join(f'`{p}`' for p in COMMON_PROPERTIES)}).")
    return "\n".join(out) + "\n"


def render(text: str) -> str:
    """`text` (docs/bindings.md) with every generated block rewritten from the declarations."""
    def block(m: re.Match[str]) -> str:
        name = m.group(2)
        if name == "driver-schemes":
            body = schemes_table()
        else:
            driver = driver_for(name.split(" ", 1)[1])
            body = options_block(driver) if driver is not None else f"(no driver registers {name.split()[1]})\n"
        return m.group(1) + body + m.group(4)

    return _BLOCK.sub(block, text)


def problems(text: str) -> list[str]:
    """What is wrong with the generated parts of `text`: a block missing for a driver, or out of date."""
    found = {m.group(2) for m in _BLOCK.finditer(text)}
    out = [f"no '<!-- BEGIN driver-options {d.schemes[0]} -->' block for the {d.schemes[0]} driver"
           for d in drivers() if f"driver-options {d.schemes[0]}" not in found]
    if "driver-schemes" not in found:
        out.append("no '<!-- BEGIN driver-schemes -->' block")
    if render(text) != text:
        out.append("generated tables differ from the drivers' declarations: "
                   "run python -m gateway.drivers.reference docs/bindings.md")
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "docs/bindings.md")
    text = path.read_text(encoding="utf-8")
    path.write_text(render(text), encoding="utf-8")
    missing = [p for p in problems(render(text)) if p.startswith("no ")]
    for p in missing:
        print(f"{path}: {p}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
