// Copies the console's front-end packages from node_modules into
// app/vendor, where the binary embeds them (no bundler: the page loads
// them as ES modules). The one change made on the way: preact/hooks
// imports "preact" by its bare name, which a browser cannot resolve
// without an import map (and the console's CSP allows no inline script),
// so it is pointed at the copied file.
//
//   node build.mjs           write app/vendor
//   node build.mjs --check   fail when app/vendor differs from what it would write
import { readFileSync, writeFileSync, mkdirSync, existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const vendor = join(here, "app", "vendor");

const files = {
  "preact.module.js": ["preact/dist/preact.module.js"],
  "hooks.module.js": ["preact/hooks/dist/hooks.module.js",
    (text) => text.replace(/from\s*"preact"/g, 'from"./preact.module.js"')],
  "htm.module.js": ["htm/dist/htm.module.js"],
  "uPlot.esm.js": ["uplot/dist/uPlot.esm.js"],
  "uPlot.min.css": ["uplot/dist/uPlot.min.css"],
};

function wanted() {
  const out = {};
  for (const [name, [from, edit]] of Object.entries(files)) {
    const path = join(modules, from);
    if (!existsSync(path)) {
      throw new Error(`${path} is missing: run npm ci in ${here}`);
    }
    let text = readFileSync(path, "utf8");
    if (edit) {
      const edited = edit(text);
      if (edited === text) throw new Error(`${from}: the expected import was not found`);
      text = edited;
    }
    // Source maps are not shipped.
    out[name] = text.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n");
  }
  return out;
}

const check = process.argv.includes("--check");
const want = wanted();
if (check) {
  const stale = Object.keys(want).filter((name) => {
    const path = join(vendor, name);
    return !existsSync(path) || readFileSync(path, "utf8") !== want[name];
  });
  const extra = existsSync(vendor) ? readdirSync(vendor).filter((f) => !(f in want)) : [];
  if (stale.length || extra.length) {
    console.error(`console/app/vendor is out of date (${[...stale, ...extra].join(", ")}): run node console/build.mjs and commit`);
    process.exit(1);
  }
  console.log("console/app/vendor is up to date");
} else {
  mkdirSync(vendor, { recursive: true });
  for (const [name, text] of Object.entries(want)) writeFileSync(join(vendor, name), text);
  console.log(`wrote ${Object.keys(want).length} files to console/app/vendor`);
}
