'use strict'
// Loads the native addon. The napi-generated `binding.js` knows every platform package, but
// it is 36 KB of source that V8 keeps for the life of the process; the usual case (the addon
// built or installed next to this package) needs none of it, so it is only the fallback.
// (Sources here are ASCII on purpose: one non-ASCII character makes V8 keep a file's whole
// source as UTF-16, twice the memory. A test checks it.)

const fs = require('node:fs')
const path = require('node:path')

function candidates() {
  const { platform, arch } = process
  const abis = platform === 'linux' ? ['-gnu', '-musl'] : platform === 'win32' ? ['-msvc'] : ['']
  return abis.map((abi) => path.join(__dirname, '..', `redial-ws.${platform}-${arch}${abi}.node`))
}

function load() {
  if (!process.env.NAPI_RS_NATIVE_LIBRARY_PATH) {
    for (const file of candidates()) {
      if (!fs.existsSync(file)) continue
      try {
        return require(file)
      } catch {
        // Wrong libc or a broken file: the generated loader reports it properly.
      }
    }
  }
  return require('../binding.js')
}

module.exports = load()
