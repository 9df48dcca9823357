// zongji_count.js: the Node.js peer in benches/workloads.rs. Streams one binlog range with
// zongji (npm; decodes rows into JS objects) and prints every row change as a JSON line on
// stdout, like binlogd's file sink (binary values as base64, as binlogd renders them); the
// bench reads and counts the lines. Exits once an event ends at or after END.
//
//   node zongji_count.js HOST PORT USER PASSWORD FILE START END
const fs = require('fs');
const ZongJi = require('zongji');
const [host, port, user, password, file, start, end] = process.argv.slice(2);
const stopAt = Number(end);
const z = new ZongJi({ host, port: Number(port), user, password });
let done = false;

// a row image with Buffers (BLOB, BINARY, BIT) as base64 text
function plain(img) {
  const o = {};
  for (const k in img) {
    const v = img[k];
    o[k] = Buffer.isBuffer(v) ? v.toString('base64') : v;
  }
  return o;
}

z.on('binlog', (ev) => {
  if (done) return;
  const name = ev.getEventName();
  let out = '';
  if (name === 'writerows') {
    for (const r of ev.rows) out += JSON.stringify({ op: 'c', after: plain(r) }) + '\n';
  } else if (name === 'deleterows') {
    for (const r of ev.rows) out += JSON.stringify({ op: 'd', before: plain(r) }) + '\n';
  } else if (name === 'updaterows') {
    for (const r of ev.rows) {
      out += JSON.stringify({ op: 'u', before: plain(r.before), after: plain(r.after) }) + '\n';
    }
  }
  // a blocking write to fd 1 (process.stdout queues in memory when the reader is slower, and
  // drops what is queued at exit)
  if (out) {
    const buf = Buffer.from(out);
    for (let off = 0; off < buf.length; ) off += fs.writeSync(1, buf, off);
  }
  idle.refresh();
  if (ev.nextPosition >= stopAt) {
    done = true;
    z.stop();
    setImmediate(() => process.exit(0));
  }
});
// no event for 30 s: the range's end was never seen (a bench must not hang)
const idle = setTimeout(() => {
  process.stderr.write(`zongji_count: no event for 30 s before position ${stopAt}\n`);
  process.exit(1);
}, 30000);
z.on('error', (e) => {
  process.stderr.write(`zongji: ${e}\n`);
  process.exit(1);
});
z.start({
  serverId: 9969,
  filename: file,
  position: Number(start),
  includeEvents: ['rotate', 'tablemap', 'writerows', 'updaterows', 'deleterows', 'xid', 'query'],
});
