'use strict'
// The bench scripts' command lines, from a spec, on node:util's parseArgs.

const { parseArgs } = require('node:util')

/**
 * `spec` maps each option to 'flag', 'number' (positive and finite, or at least `atLeast[name]`)
 * or 'list' (comma-separated). Returns the values under camelCased names (`--min-delay` ->
 * `minDelay`, `--no-write` -> `noWrite`). `--help`/`-h` calls `help()` and exits 0; anything else
 * wrong prints `hint` and exits 2.
 */
function parseOptions(argv, spec, { help, hint, atLeast = {} }) {
  const options = { help: { type: 'boolean', short: 'h' } }
  for (const [name, kind] of Object.entries(spec)) options[name] = { type: kind === 'flag' ? 'boolean' : 'string' }
  const fail = (message) => {
    console.error(`${message} (${hint})`)
    process.exit(2)
  }
  let values
  try {
    ;({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }))
  } catch (err) {
    fail(err.message)
  }
  if (values.help) {
    help()
    process.exit(0)
  }
  const out = {}
  for (const [name, kind] of Object.entries(spec)) {
    if (!(name in values)) continue
    const key = name.replace(/-([a-z])/g, (_, c) => c.toUpperCase())
    const raw = values[name]
    if (kind === 'flag') out[key] = raw
    else if (kind === 'list') out[key] = raw.split(',').filter(Boolean)
    else {
      const n = Number(raw)
      const min = atLeast[name]
      if (!Number.isFinite(n) || (min === undefined ? !(n > 0) : !(n >= min)))
        fail(`--${name} needs ${min === undefined ? 'a positive number' : `a number >= ${min}`}`)
      out[key] = n
    }
  }
  out.quick = Boolean(out.quick)
  return out
}

module.exports = { parseOptions }
