// What loading the library costs a process: its sources stay in V8's heap for the life of
// the process, so they are kept small (and every byte of them counts in young-generation
// survival, which decides when V8 grows its young generation).
import { spawnSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import test from 'ava'

const root = fileURLToPath(new URL('..', import.meta.url))

test('library sources are ASCII (one other character makes V8 keep a whole file as UTF-16)', (t) => {
  const files = ['index.js', ...readdirSync(`${root}lib`).filter((f) => f.endsWith('.js')).map((f) => `lib/${f}`)]
  t.true(files.length >= 6)
  for (const f of files) {
    const text = readFileSync(`${root}${f}`, 'utf8')
    const at = text.search(/[^\x00-\x7f]/)
    t.is(at, -1, `${f}: non-ASCII ${JSON.stringify(text.slice(at, at + 20))} at offset ${at}`)
  }
})

test('loading the library reads its own sources and the addon, nothing else (no generated platform loader, no package.json)', (t) => {
  const script = `require(${JSON.stringify(root)}); process.stdout.write(JSON.stringify(Object.keys(require.cache)))`
  const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
  t.is(run.status, 0, run.stderr)
  const loaded: string[] = JSON.parse(run.stdout)
  t.true(loaded.some((f) => f.endsWith('native.js')))
  const extra = loaded.filter((f) => !/(\/index\.js|\/lib\/[a-z0-9]+\.js|\.node)$/.test(f))
  t.deepEqual(extra, [])
})
