// The payloads of groups 12 and 13: Autobahn's five test data files (autobahntestsuite/testdata/),
// whose slices the cases send. Those files are third-party content (a Gutenberg text, the Lena
// bitmap, a research paper's PDF, a JSON and an HTML report), so they are not copied here: by
// default each is replaced by a generated stand-in of the same length and the same kind (UTF-8 /
// binary, about as compressible, text files ASCII-only so that every slice is valid UTF-8).
// Autobahn slices its text files by character, these by octet: in the originals (data1.html has
// 53 octets beyond ASCII) no slice the cases take ends inside a character, so every slice is valid
// UTF-8 either way, but past data1.html's first non-ASCII character a slice holds other octets
// than Autobahn's (and its length is judged in octets, Autobahn's in characters): the verdicts
// do not depend on it.
// AUTOBAHN_TESTDATA=<dir> uses the original files from <dir> (e.g.
// a checkout's autobahntestsuite/autobahntestsuite/testdata) instead.
//
//   file                 length   gzip -6   kind
//   data1.json           194056      8468   text   (an Autobahn results index)
//   lena512.bmp          263222    224358   binary (512x512 8-bit grey bitmap)
//   pg2229.txt           222218     86403   binary (German verse, UTF-8)
//   data1.html           263647     14532   text   (an Autobahn HTML report)
//   10.1.1.105.5439.pdf 1042328    788946   binary (a PDF, mostly compressed streams)
import { readFileSync } from 'node:fs'
import path from 'node:path'

export interface TestDataSpec {
  key: string
  desc: string
  file: string
  binary: boolean
  length: number
}

/** WS_COMPRESSION_TESTDATA, with the files' lengths. */
export const TESTDATA: Record<string, TestDataSpec> = {
  gutenberg_faust: { key: 'gutenberg_faust', desc: "Human readable text, Goethe's Faust I (German)", file: 'pg2229.txt', binary: true, length: 222218 },
  lena512: { key: 'lena512', desc: 'Lena Picture, Bitmap 512x512 bw', file: 'lena512.bmp', binary: true, length: 263222 },
  ooms: { key: 'ooms', desc: 'A larger PDF', file: '10.1.1.105.5439.pdf', binary: true, length: 1042328 },
  json_data1: { key: 'json_data1', desc: 'Large JSON data file', file: 'data1.json', binary: false, length: 194056 },
  html_data1: { key: 'html_data1', desc: 'Large HTML file', file: 'data1.html', binary: false, length: 263647 },
}

/** The order of the 12.x subgroups (WS_COMPRESSION_TESTDATA_KEYS: Python 2's historical dict order). */
export const TESTDATA_KEYS = ['json_data1', 'lena512', 'gutenberg_faust', 'html_data1', 'ooms']

const cache = new Map<string, Buffer>()

/** The octets of one test data file: the original from AUTOBAHN_TESTDATA, else the stand-in. */
export function testData(key: string): Buffer {
  let b = cache.get(key)
  if (!b) {
    const spec = TESTDATA[key]
    const dir = process.env.AUTOBAHN_TESTDATA
    b = dir ? readFileSync(path.join(dir, spec.file)) : generate(spec)
    cache.set(key, b)
  }
  return b
}

/** Where the payloads come from, for the run's log. */
export function testDataSource(): string {
  const dir = process.env.AUTOBAHN_TESTDATA
  return dir ? `Autobahn's test data files from ${dir}` : "generated stand-ins for Autobahn's test data files (AUTOBAHN_TESTDATA=<dir> uses the originals)"
}

// ---------------------------------------------------------------- stand-ins

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Appends pieces until `length` octets are there, then cuts to exactly `length`. */
function build(length: number, next: (out: Array<string | Buffer>) => void): Buffer {
  const out: Array<string | Buffer> = []
  let n = 0
  while (n < length) {
    const before = out.length
    next(out)
    for (let i = before; i < out.length; i++) n += typeof out[i] === 'string' ? Buffer.byteLength(out[i] as string) : (out[i] as Buffer).length
  }
  return Buffer.concat(out.map((x) => (typeof x === 'string' ? Buffer.from(x, 'utf8') : x))).subarray(0, length)
}

function generate(spec: TestDataSpec): Buffer {
  switch (spec.key) {
    case 'json_data1':
      return jsonIndex(spec.length)
    case 'html_data1':
      return htmlReport(spec.length)
    case 'gutenberg_faust':
      return germanVerse(spec.length)
    case 'lena512':
      return greyBitmap(spec.length)
    case 'ooms':
      return pdfLike(spec.length)
    default:
      throw new Error(`no stand-in for ${spec.key}`)
  }
}

const BEHAVIORS = ['OK', 'OK', 'OK', 'OK', 'OK', 'OK', 'NON-STRICT', 'INFORMATIONAL', 'UNIMPLEMENTED', 'FAILED']

function caseIds(): string[] {
  const ids: string[] = []
  for (let g = 1; g <= 13; g++) for (let s = 1; s <= 8; s++) for (let c = 1; c <= 18; c++) ids.push(`${g}.${s}.${c}`)
  return ids
}

/** An Autobahn results index: agent -> case -> {behavior, behaviorClose, duration, remoteCloseCode, reportfile}. */
function jsonIndex(length: number): Buffer {
  const r = rng(1)
  const ids = caseIds()
  let agent = 0
  let started = false
  return build(length, (out) => {
    const name = `Agent${agent}/0.${agent % 7}.${agent % 3}`
    const file = name.toLowerCase().replace(/[^a-z0-9]+/g, '_')
    out.push(started ? '   },\n' : '{\n')
    started = true
    out.push(`   "${name}": {\n`)
    const entries = ids.map((id) => {
      const b = BEHAVIORS[Math.floor(r() * BEHAVIORS.length)]
      const duration = Math.floor(r() * r() * 400)
      return `      "${id}": {\n         "behavior": "${b}",\n         "behaviorClose": "${r() < 0.9 ? 'OK' : b}",\n         "duration": ${duration},\n         "remoteCloseCode": ${r() < 0.9 ? 1000 : 'null'},\n         "reportfile": "${file}_case_${id.replace(/\./g, '_')}.json"\n      }`
    })
    out.push(`${entries.join(',\n')}\n`)
    agent++
  })
}

const WORDS_EN = 'send receive message frame payload text binary close code clean connection server client octets fragment chop ping pong echo length valid invalid reserved opcode handshake timeout expected actual events case result behavior wait verify'.split(' ')

/** An Autobahn HTML report: a style sheet, then per case a description, an expectation and a wire log in hex. */
function htmlReport(length: number): Buffer {
  const r = rng(2)
  const words = (n: number) => Array.from({ length: n }, () => WORDS_EN[Math.floor(r() * WORDS_EN.length)]).join(' ')
  const hex = (n: number) => Array.from({ length: n }, () => Math.floor(r() * 256).toString(16).padStart(2, '0')).join('')
  let first = true
  let k = 0
  return build(length, (out) => {
    if (first) {
      first = false
      out.push('<!DOCTYPE html>\n<html>\n   <head>\n      <meta charset="utf-8" />\n      <style lang="css">\n')
      for (const sel of ['body', 'p#intro', 'p#intro a', '.block', 'p.case_text_block', 'p.case_desc', 'p.case_expect', 'p.case_outcome', 'table', 'td', 'td.case_ok', 'td.case_failed', 'pre.wirelog_rx_octets', 'pre.wirelog_tx_octets']) {
        out.push(`${sel} {\n   background-color: #${hex(3)};\n   padding: ${Math.floor(r() * 20)}px;\n   margin: ${Math.floor(r() * 20)}px;\n   color: #444;\n}\n\n`)
      }
      out.push('      </style>\n   </head>\n   <body>\n')
    }
    const id = `${1 + (k % 13)}.${1 + (k % 7)}.${1 + (k % 17)}`
    out.push(`      <br/><hr/>\n      <a name="case_${id.replace(/\./g, '_')}"></a>\n      <h2>Case ${id}</h2>\n`)
    out.push(`      <p class="case_text_block case_desc"><b>Case Description</b><br/><br/>${words(8 + Math.floor(r() * 12))}.</p>\n`)
    out.push(`      <p class="case_text_block case_expect"><b>Case Expectation</b><br/><br/>${words(6 + Math.floor(r() * 10))}.</p>\n`)
    out.push(`      <p class="case_text_block case_outcome">\n         <b>Case Outcome</b><br/><br/>Actual events match at least one expected.<br/><br/>\n         <i>Expected:</i><br/><span class="case_pickle">{'OK': []}</span><br/><br/>\n      </p>\n`)
    out.push('      <table>\n')
    for (let i = 0; i < 4 + Math.floor(r() * 6); i++) out.push(`         <tr><td>${['closedByMe', 'failedByMe', 'droppedByMe', 'wasClean', 'remoteCloseCode'][i % 5]}</td><td class="case_${r() < 0.9 ? 'ok' : 'failed'}">${r() < 0.5 ? 'True' : 'False'}</td><td>${words(3)}</td></tr>\n`)
    out.push('      </table>\n')
    const n = Math.floor(r() * r() * 4)
    for (let i = 0; i < n; i++) out.push(`      <pre class="wirelog_${r() < 0.5 ? 'rx' : 'tx'}_octets">${String(i).padStart(3, '0')} TX OCTETS: ${hex(8 + Math.floor(r() * 16))}</pre>\n`)
    k++
  })
}

const WORDS_DE = 'und der die das ich nicht ist zu ein sich mit du es so was wie mir mich den auf dem er sie nur an mein wohl wenn dich noch doch ihr als kann nun da hier wird auch schon Welt Geist Herz Gott Nacht Tag Liebe Himmel Erde Sinn Mensch Teufel Seele Leben Herr Zeit Blick Grund Kraft Glück Natur Wissen gern sehr viel möchte sollen wünschte wißt läßt weiß Trübsal führen schön müssen können Gefühl Brust Menge Dichter Volk Fest Augen Gestalt Tränen über für Schöne Größe Früh hören Höhe Mädchen Bühne Spiel'.split(' ')
const SPEAKERS = ['FAUST.', 'MEPHISTOPHELES.', 'MARGARETE.', 'WAGNER.', 'MARTHE.', 'DICHTER.', 'DIREKTOR.', 'LUSTIGE PERSON.', 'CHOR DER ENGEL.', 'SCHÜLER.']

/** German verse in UTF-8: speakers' names, lines of words, blank lines; Zipf-like word frequencies. */
function germanVerse(length: number): Buffer {
  const r = rng(3)
  const word = () => WORDS_DE[Math.floor(WORDS_DE.length * r() ** 1.4)]
  return build(length, (out) => {
    out.push(`${SPEAKERS[Math.floor(r() * SPEAKERS.length)]}\n`)
    const lines = 2 + Math.floor(r() * 10)
    for (let i = 0; i < lines; i++) {
      const n = 4 + Math.floor(r() * 5)
      const ws = Array.from({ length: n }, word)
      ws[0] = ws[0][0].toUpperCase() + ws[0].slice(1)
      out.push(`  ${ws.join(' ')}${[',', ';', '.', '!', '?', ''][Math.floor(r() * 6)]}\n`)
    }
    out.push('\n')
  })
}

/** A 512x512 8-bit grey BMP: header, grey palette, smooth shapes with noise (bottom-up rows). */
function greyBitmap(length: number): Buffer {
  const r = rng(4)
  const w = 512
  const h = 512
  const header = Buffer.alloc(54)
  header.write('BM', 0, 'latin1')
  header.writeUInt32LE(length, 2)
  header.writeUInt32LE(54 + 1024, 10)
  header.writeUInt32LE(40, 14)
  header.writeInt32LE(w, 18)
  header.writeInt32LE(h, 22)
  header.writeUInt16LE(1, 26)
  header.writeUInt16LE(8, 28)
  header.writeUInt32LE(w * h, 34)
  header.writeUInt32LE(256, 46)
  const palette = Buffer.alloc(1024)
  for (let i = 0; i < 256; i++) palette.writeUInt32LE(i * 0x010101, i * 4)
  const pixels = Buffer.alloc(w * h)
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = 120 + 55 * Math.sin(x / 37 + Math.sin(y / 53) * 2) * Math.cos(y / 29) + 35 * Math.sin((x + 2 * y) / 71) + (r() - 0.5) * 40
      pixels[y * w + x] = Math.max(0, Math.min(255, Math.round(v)))
    }
  }
  return Buffer.concat([header, palette, pixels]).subarray(0, length)
}

/** A PDF-like file: plain object dictionaries and text, and mostly "FlateDecode" streams of incompressible octets. */
function pdfLike(length: number): Buffer {
  const r = rng(5)
  let obj = 1
  let first = true
  return build(length, (out) => {
    if (first) {
      first = false
      out.push(Buffer.from('%PDF-1.4\n%\xe2\xe3\xcf\xd3\n', 'latin1'))
    }
    if (r() < 0.35) {
      out.push(`${obj} 0 obj\n<< /Type /Font /Subtype /Type1 /BaseFont /Times-Roman /FirstChar 32 /LastChar ${96 + Math.floor(r() * 160)} /Widths ${obj + 1} 0 R >>\nendobj\n`)
      out.push(`${obj + 1} 0 obj\n[ ${Array.from({ length: 40 + Math.floor(r() * 80) }, () => 250 + Math.floor(r() * 9) * 50).join(' ')} ]\nendobj\n`)
      obj += 2
    } else if (r() < 0.3) {
      const text = Array.from({ length: 20 + Math.floor(r() * 60) }, () => `BT /F${1 + Math.floor(r() * 4)} ${8 + Math.floor(r() * 6)} Tf ${Math.floor(r() * 500)} ${Math.floor(r() * 700)} Td (${WORDS_EN[Math.floor(r() * WORDS_EN.length)]} ${WORDS_EN[Math.floor(r() * WORDS_EN.length)]}) Tj ET`).join('\n')
      out.push(`${obj} 0 obj\n<< /Length ${text.length} >>\nstream\n${text}\nendstream\nendobj\n`)
      obj++
    } else {
      const n = 1000 + Math.floor(r() * 6000)
      const data = Buffer.alloc(n)
      for (let i = 0; i < n; i++) data[i] = Math.floor(r() * 256)
      out.push(`${obj} 0 obj\n<< /Length ${n} /Filter /FlateDecode >>\nstream\n`, data, '\nendstream\nendobj\n')
      obj++
    }
  })
}
