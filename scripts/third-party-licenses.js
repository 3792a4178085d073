#!/usr/bin/env node
'use strict'
// The licence texts of the Rust crates linked into the addon, for a platform package: the binary
// is a copy of them, and their licences (MIT, Apache-2.0, ISC, BSD, Unicode...) ask that their
// notices go with copies. The crates are those `cargo metadata` resolves for the target as normal
// dependencies (not dev or build dependencies), the texts the files each crate publishes
// (LICENSE*, COPYING*, NOTICE*...); identical texts are written once, after the crates they cover.
// cargo-about does this and more; it is a tool to install, and this is all a package needs.
//
//   node scripts/third-party-licenses.js <rust target triple> <output file>

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')

/** Crates whose published package ships no licence file: the text from their repository. */
const OWN_TEXTS = {
  napi: 'napi-rs.txt',
  'napi-derive': 'napi-rs.txt',
  'napi-derive-backend': 'napi-rs.txt',
  'napi-sys': 'napi-rs.txt',
}

const LICENSE_FILE = /^(licen[cs]e|copying|notice|copyright|unlicense)/i

/** The crates linked for `target`: `{ name, version, license, texts: [{ file, text }] }`, sorted. */
function linkedCrates(target) {
  const meta = JSON.parse(
    execFileSync('cargo', ['metadata', '--format-version', '1', '--locked', '--filter-platform', target, '--manifest-path', path.join(root, 'Cargo.toml')], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    }),
  )
  const packages = new Map(meta.packages.map((p) => [p.id, p]))
  const nodes = new Map(meta.resolve.nodes.map((n) => [n.id, n]))
  const rootId = meta.resolve.root
  const seen = new Set([rootId])
  const stack = [rootId]
  while (stack.length > 0) {
    for (const dep of nodes.get(stack.pop()).deps) {
      if (!dep.dep_kinds.some((k) => k.kind === null) || seen.has(dep.pkg)) continue
      seen.add(dep.pkg)
      stack.push(dep.pkg)
    }
  }
  seen.delete(rootId)
  const crates = [...seen].map((id) => {
    const p = packages.get(id)
    const dir = path.dirname(p.manifest_path)
    const names = fs.readdirSync(dir).filter((f) => LICENSE_FILE.test(f) && fs.statSync(path.join(dir, f)).isFile())
    if (p.license_file && !names.includes(p.license_file)) names.push(p.license_file)
    let texts = names.sort().map((f) => ({ file: f, text: fs.readFileSync(path.join(dir, f), 'utf8') }))
    if (texts.length === 0 && OWN_TEXTS[p.name]) {
      texts = [{ file: `LICENSE (${p.repository ?? 'its repository'})`, text: fs.readFileSync(path.join(__dirname, 'licenses', OWN_TEXTS[p.name]), 'utf8') }]
    }
    if (texts.length === 0) throw new Error(`${p.name} ${p.version} (${p.license}) ships no licence file: add its text to scripts/licenses/ and OWN_TEXTS`)
    return { name: p.name, version: p.version, license: p.license ?? 'see its licence file', texts }
  })
  return crates.sort((a, b) => a.name.localeCompare(b.name) || a.version.localeCompare(b.version))
}

/** The notices file for `target`. */
function thirdPartyLicenses(target) {
  const crates = linkedCrates(target)
  // One copy of each distinct text (Apache-2.0's is in most of them), after the crates it covers.
  const byText = new Map()
  for (const crate of crates) {
    for (const { file, text } of crate.texts) {
      // The same text laid out differently is the same text.
      const key = text.replace(/\s+/g, ' ').trim()
      if (!byText.has(key)) byText.set(key, { text: text.replace(/\r\n/g, '\n').trim(), users: [] })
      byText.get(key).users.push(`${crate.name} ${crate.version} (${file})`)
    }
  }
  const rule = '-'.repeat(78)
  const out = [
    `The redial-ws binary for ${target} contains the following Rust crates. Their licences and`,
    'notices follow the list.',
    '',
    ...crates.map((c) => `  ${c.name} ${c.version}: ${c.license}`),
    '',
  ]
  for (const { text, users } of byText.values()) out.push(rule, ...users, rule, '', text, '')
  return out.join('\n')
}

module.exports = { linkedCrates, thirdPartyLicenses }

if (require.main === module) {
  const [target, file] = process.argv.slice(2)
  if (!target || !file) {
    console.error('usage: node scripts/third-party-licenses.js <rust target triple> <output file>')
    process.exit(2)
  }
  fs.writeFileSync(file, thirdPartyLicenses(target))
}
