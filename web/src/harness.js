// The vector harness page: window.csfsRunVectors(base, files, logs) runs every
// vector and lists the outcomes in a table (tests/web drives it).

import { runFileVector, runLogVector } from "./vectors.js";

window.csfsRunVectors = async (base, files, logs) => {
  const out = {};
  const table = document.querySelector("#results");
  for (const [kind, names, run] of [["file", files, runFileVector], ["log", logs, runLogVector]]) {
    for (const name of names) {
      const r = await run(base, name);
      out[`${kind}/${name}`] = r;
      const row = table.insertRow();
      const ok = r.expect === r.got;
      row.className = ok ? "ok" : "bad";
      for (const text of [`${kind}/${name}`, r.expect, r.got, r.detail ?? ""]) row.insertCell().textContent = text;
    }
  }
  return out;
};
document.body.dataset.ready = "1";
