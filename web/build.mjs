// Builds dist/ (not committed): the bundles, the pages, and their SRI hashes.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";

const here = new URL(".", import.meta.url).pathname;
const dist = here + "dist/";
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);
await build({
  entryPoints: { reader: here + "src/reader.js", harness: here + "src/harness.js", link: here + "src/link.js" },
  bundle: true,
  format: "esm",
  minify: true,
  sourcemap: false,
  target: ["chrome111", "firefox115", "safari16.4"],
  outdir: dist,
  legalComments: "linked",
  logLevel: "warning",
});
const sri = (name) => "sha384-" + createHash("sha384").update(readFileSync(dist + name)).digest("base64");
const hashes = {};
for (const f of ["reader.js", "harness.js", "link.js"]) hashes[f] = sri(f);
writeFileSync(dist + "style.css", readFileSync(here + "static/style.css"));
hashes["style.css"] = sri("style.css");
for (const page of readdirSync(here + "static").filter((f) => f.endsWith(".html"))) {
  let html = readFileSync(here + "static/" + page, "utf8");
  html = html.replace(/%SRI:([a-z.]+)%/g, (_, f) => hashes[f]);
  writeFileSync(dist + page, html);
}
// Published beside the pages so that anyone can compare what a server sends.
writeFileSync(dist + "SRI.txt", Object.entries(hashes).map(([f, h]) => `${h}  ${f}`).join("\n") + "\n");
