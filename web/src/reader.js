// The reader page: open a vault, browse it as the mount shows it, save files.
// Nothing is saved unless every check passed; errors are one sentence.

import { loadIdentity } from "./keys.js";
import { S3Store } from "./s3.js";
import { CsfsError } from "./util.js";
import { blobSink, coalesced, opfsSink, pickerSink, saveMode } from "./sinks.js";
import { Vault } from "./vault.js";

const $ = (id) => document.getElementById(id);
let vault = null;
let trail = []; // folder refs from the root to the one shown
let busy = false;

// localStorage holds only what 5.2, 5.3 and 7.2 make a client remember.
const memory = {
  get: (k) => JSON.parse(localStorage.getItem("csfs:" + k) ?? "null"),
  set: (k, v) => localStorage.setItem("csfs:" + k, JSON.stringify(v)),
};

function sentence(e) {
  if (e instanceof CsfsError) {
    const m = e.message.replace(/\.$/, "");
    if (e.kind === "authentication") return `Refused: ${m}; the data was changed or is not from an allowed writer, and nothing was saved.`;
    if (e.kind === "format") return `Refused: ${m}; the data is malformed, and nothing was saved.`;
    return m.charAt(0).toUpperCase() + m.slice(1) + ".";
  }
  return `Unexpected failure: ${e.message}.`;
}

function showError(e) {
  const el = $("error");
  el.textContent = e ? sentence(e) : "";
  el.hidden = !e;
  if (e) console.warn(e);
}

const status = (t) => ($("status").textContent = t);

function humanSize(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

async function withBusy(fn) {
  if (busy) return;
  busy = true;
  document.body.dataset.busy = "1";
  showError(null);
  try {
    await fn();
  } catch (e) {
    showError(e);
    status("");
  } finally {
    busy = false;
    delete document.body.dataset.busy;
  }
}

$("open").addEventListener("submit", (ev) => {
  ev.preventDefault();
  withBusy(async () => {
    const file = $("keyfile").files[0];
    if (!file) throw new CsfsError("key", "pick your private key file");
    status("Decrypting your key…");
    const identity = await loadIdentity(await file.text(), $("passphrase").value);
    $("passphrase").value = "";
    const store = new S3Store({
      endpoint: $("endpoint").value.trim(),
      bucket: $("bucket").value.trim(),
      prefix: $("prefix").value.trim(),
      accessKeyId: $("akid").value.trim(),
      secretAccessKey: $("secret").value,
      sessionToken: $("token").value.trim(),
      region: $("region").value.trim() || "us-east-1",
    });
    status("Verifying the vault and its access log…");
    vault = await Vault.open(store, identity, memory);
    trail = [vault.root()];
    $("open").hidden = true;
    $("browser").hidden = false;
    await show();
    status(`Opened as ${identity.fingerprint.slice(0, 19)}… (${identity.kind}).`);
  });
});

$("close-button").addEventListener("click", () => {
  vault = null;
  trail = [];
  $("listing").replaceChildren();
  $("browser").hidden = true;
  $("open").hidden = false;
  showError(null);
  status("Closed.");
});

async function show() {
  const here = trail[trail.length - 1];
  const items = await vault.list(here);
  const crumbs = $("crumbs");
  crumbs.replaceChildren();
  trail.forEach((ref, i) => {
    if (i) crumbs.append(Object.assign(document.createElement("span"), { textContent: "/" }));
    const b = Object.assign(document.createElement("button"), { type: "button", textContent: i ? ref.name : "Vault" });
    b.addEventListener("click", () => withBusy(async () => {
      const old = trail;
      trail = trail.slice(0, i + 1);
      try {
        await show();
      } catch (e) {
        trail = old;
        throw e;
      }
    }));
    crumbs.append(b);
  });
  const list = $("listing");
  list.replaceChildren();
  if (!items.length) list.append(Object.assign(document.createElement("li"), { className: "empty", textContent: "This folder is empty." }));
  for (const it of items) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.name = it.name;
    const name = Object.assign(document.createElement("span"), { className: "name", textContent: it.name });
    const meta = Object.assign(document.createElement("span"), { className: "meta" });
    if (it.type === "d") {
      li.className = "dir";
      meta.textContent = "folder";
      b.addEventListener("click", () => withBusy(async () => {
        trail.push(it.ref);
        try {
          await show();
        } catch (e) {
          trail.pop();
          throw e;
        }
      }));
    } else if (it.type === "f") {
      li.className = "file";
      meta.textContent = humanSize(it.size);
      b.addEventListener("click", () => save(it));
    } else {
      li.className = "other";
      meta.textContent = { l: "symlink", p: "fifo", s: "socket", c: "device", b: "device" }[it.type];
      b.disabled = true;
    }
    b.append(name, meta);
    li.append(b);
    list.append(li);
  }
}

// Benchmarks only (scripts/bench web): ?batch=<MiB> sets the largest ranged read
// (decryptPayload's default is 8 MiB).
const readOptions = (() => {
  const mib = Number(new URLSearchParams(location.search).get("batch"));
  return mib > 0 && mib <= 64 ? { batch: mib << 20 } : {};
})();

function save(it) {
  const usePicker = "showSaveFilePicker" in window && !saveMode;
  // The picker must open inside the click's user activation, before any await.
  const picked = usePicker ? window.showSaveFilePicker({ suggestedName: it.name }).catch(() => null) : null;
  withBusy(async () => {
    let sink;
    if (usePicker) {
      const handle = await picked;
      if (!handle) return status("Not saved.");
      sink = await pickerSink(handle);
    } else if (saveMode !== "blob" && navigator.storage?.getDirectory) {
      sink = await opfsSink(it.name).catch(() => blobSink(it.name));
    } else {
      sink = blobSink(it.name);
    }
    sink = coalesced(sink);
    let done = 0;
    let shown = 0;
    const started = performance.now();
    try {
      for await (const piece of vault.readFile(it, readOptions)) {
        await sink.write(piece);
        done += piece.length;
        // A few updates a second, not one per 64 KiB chunk.
        if (performance.now() - shown > 250) {
          shown = performance.now();
          status(`Decrypting ${it.name}: ${humanSize(done)} of ${humanSize(it.size)}…`);
        }
      }
    } catch (e) {
      await sink.abort();
      throw e;
    }
    const secs = (performance.now() - started) / 1000;
    await sink.finish();
    document.body.dataset.lastSave = JSON.stringify({ name: it.name, bytes: done, seconds: secs });
    status(`Saved ${it.name} (${humanSize(done)}, verified) in ${secs.toFixed(1)} s.`);
  });
}

document.body.dataset.ready = "1";
