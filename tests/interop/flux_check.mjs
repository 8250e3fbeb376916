// Checks Flux scripts with InfluxData's Flux language service (@influxdata/flux-lsp-browser, the Flux
// parser and type checker compiled to WebAssembly): reads a JSON list of scripts on stdin, prints a JSON
// list of {valid, errors}: valid is the service's semantic check (syntax, identifiers, builtin function
// signatures and argument types); errors are the parser's messages (the semantic check gives none).
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { pathToFileURL } from "node:url";

// The package is built for bundlers: its glue imports the wasm module, which imports the glue back,
// a cycle Node's loader refuses. The glue is loaded with that import replaced by a setter instead.
async function loadFlux() {
  const require = createRequire(import.meta.url);
  const dir = dirname(require.resolve("@influxdata/flux-lsp-browser/package.json"));
  let glue = readFileSync(join(dir, "flux-lsp-browser_bg.js"), "utf8");
  const head = "import * as wasm from './flux-lsp-browser_bg.wasm';";
  if (!glue.startsWith(head)) throw new Error("unexpected flux-lsp-browser glue: " + glue.slice(0, 80));
  const init = /\ncached(Int32|Uint8)Memory0 = new \w+Array\(wasm\.memory\.buffer\);/g;
  const inits = glue.match(init) || [];
  glue = "let wasm;\nexport function __setWasm(w) { wasm = w;" + inits.join("") + "\n}\n" +
    glue.slice(head.length).replace(init, "");
  const out = join(mkdtempSync(join(tmpdir(), "flux-check-")), "glue.mjs");
  writeFileSync(out, glue);
  const mod = await import(pathToFileURL(out).href);
  const { instance } = await WebAssembly.instantiate(readFileSync(join(dir, "flux-lsp-browser_bg.wasm")),
                                                     { "./flux-lsp-browser_bg.js": mod });
  mod.__setWasm(instance.exports);
  return mod;
}

function parseErrors(node, out = []) {
  if (Array.isArray(node)) {
    node.forEach((n) => parseErrors(n, out));
  } else if (node && typeof node === "object") {
    for (const [key, value] of Object.entries(node)) {
      if (key === "errors" && Array.isArray(value)) out.push(...value.map((e) => e.msg ?? JSON.stringify(e)));
      else parseErrors(value, out);
    }
  }
  return out;
}

const { Flux, parse } = await loadFlux();
const scripts = JSON.parse(readFileSync(0, "utf8"));
const results = scripts.map((script) => {
  const flux = new Flux(script);
  let valid;
  try {
    valid = flux.is_valid();
  } catch (e) {
    valid = false;
  }
  flux.free();
  return { valid, errors: parseErrors(parse(script)) };
});
process.stdout.write(JSON.stringify(results) + "\n");
