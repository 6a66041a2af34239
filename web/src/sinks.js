// Where a saved file goes while it is decrypted (the reader and the link page).

// Where a file goes while it is decrypted. Each sink takes verified pieces and
// either finishes (the file is handed to the person) or aborts (nothing is).
//  - picker: the File System Access API streams to the file the person chose;
//    the browser writes to a temporary file and discards it on abort.
//  - opfs: a temporary file in the origin-private file system, handed over as
//    a disk-backed File once complete: memory stays bounded with no picker.
//  - blob: Blob parts (the browser may page them to disk) where neither exists.
export const saveMode = new URLSearchParams(location.search).get("save"); // tests: "download", "blob"
const OPFS_PREFIX = "csfs-download-";

export async function pickerSink(handle) {
  const w = await handle.createWritable();
  return { write: (b) => w.write(b), abort: () => w.abort(), finish: () => w.close() };
}

function handOver(file, name) {
  const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(file), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  return a.href;
}

export async function opfsSink(name) {
  const root = await navigator.storage.getDirectory();
  const tmp = OPFS_PREFIX + crypto.randomUUID();
  const fh = await root.getFileHandle(tmp, { create: true });
  const w = await fh.createWritable();
  const drop = () => root.removeEntry(tmp).catch(() => {});
  return {
    write: (b) => w.write(b),
    abort: async () => {
      await w.abort().catch(() => {});
      await drop();
    },
    finish: async () => {
      await w.close();
      const href = handOver(await fh.getFile(), name);
      setTimeout(() => {
        URL.revokeObjectURL(href);
        drop();
      }, 120000);
    },
  };
}

export function blobSink(name) {
  const parts = [];
  let pending = [];
  let pendingBytes = 0;
  return {
    write: (b) => {
      pending.push(b.slice());
      pendingBytes += b.length;
      if (pendingBytes >= 16 << 20) {
        parts.push(new Blob(pending));
        pending = [];
        pendingBytes = 0;
      }
    },
    abort: async () => {},
    finish: async () => {
      const href = handOver(new Blob([...parts, new Blob(pending)], { type: "application/octet-stream" }), name);
      setTimeout(() => URL.revokeObjectURL(href), 120000);
    },
  };
}

// Temporary files left by a page that was closed while saving.
(async () => {
  try {
    const root = await navigator.storage.getDirectory();
    for await (const name of root.keys()) if (name.startsWith(OPFS_PREFIX)) await root.removeEntry(name);
  } catch {
    // no origin-private file system here
  }
})();


// Gathers verified pieces (64 KiB chunks) into writes of `size` bytes through one
// reused buffer: a few hundred writes per GiB instead of 16,384, each written
// before the buffer is filled again (the write is awaited).
export function coalesced(sink, size = 4 << 20) {
  const buf = new Uint8Array(size);
  let fill = 0;
  const flush = async () => {
    if (fill) await sink.write(buf.subarray(0, fill));
    fill = 0;
  };
  return {
    write: async (piece) => {
      for (let at = 0; at < piece.length; ) {
        const take = Math.min(piece.length - at, size - fill);
        buf.set(piece.subarray(at, at + take), fill);
        fill += take;
        at += take;
        if (fill === size) await flush();
      }
    },
    abort: () => sink.abort(),
    finish: async () => {
      await flush();
      await sink.finish();
    },
  };
}
