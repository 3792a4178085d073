// Packaging: `npm pack`, install the tarball into a brand-new project, type-check a
// strict nodenext TypeScript consumer, run CJS, ESM and TS consumers against a local server.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'ava'

import { wsServer } from './helpers.js'

const repo = fileURLToPath(new URL('..', import.meta.url))
const npm = (cwd: string, ...args: string[]) =>
  execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })

test.serial('npm pack → npm install in a fresh project → tsc (strict, nodenext) → CJS, ESM and TS consumers run', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'redial-consumer-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const tarball = npm(repo, 'pack', '--pack-destination', dir).trim().split('\n').pop()!
  const listing = execFileSync('tar', ['-tzf', join(dir, tarball)], { encoding: 'utf8' })
  t.regex(listing, /package\/redial-ws\.linux-x64-gnu\.node/, 'the prebuilt addon is in the tarball')
  t.regex(listing, /package\/src\/lib\.rs/, 'the Rust sources are in the tarball (build from source)')
  t.notRegex(listing, /package\/target\/|package\/__test__\//)

  npm(dir, 'init', '-y')
  const typescript = JSON.parse(npm(repo, 'ls', 'typescript', '--json')).dependencies.typescript.version
  npm(dir, 'install', join(dir, tarball), `typescript@${typescript}`, '@types/node@20')
  const installed = join(dir, 'node_modules', 'redial-ws')
  t.false(existsSync(join(installed, 'target')), 'no Rust target/ inside node_modules')
  for (const f of ['consumer.mts', 'consumer.cjs', 'consumer.mjs']) cpSync(join(repo, '__test__', 'consumer', f), join(dir, f))
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, outDir: 'out', types: ['node'] }, files: ['consumer.mts'] }),
  )
  const tsc = spawnSync(process.execPath, [join(dir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8' })
  t.is(tsc.status, 0, tsc.stdout + tsc.stderr)

  const peer = await wsServer((s) => s.on('message', (d) => s.send(`echo: ${d}`)))
  // Asynchronous: the server lives in this process and must keep answering.
  const run = async (file: string) => {
    const child = spawn(process.execPath, [join(dir, file), peer.url], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    const [code] = await once(child, 'exit')
    clearTimeout(killer)
    t.is(code, 0, err)
    return JSON.parse(out.trim().split('\n').pop()!)
  }
  t.like(await run('consumer.cjs'), { reply: 'echo: hello from cjs', open: 0 })
  t.like(await run('consumer.mjs'), { reply: 'echo: hello from esm', open: 0 })
  t.like(await run(join('out', 'consumer.mjs')), { reply: 'echo: hello from ts', open: 0, sent: 1, result: { discarded: 0 } })

  // No prebuilt binary and no cargo: a clear message, not a cryptic failure.
  const addon = readdirSync(installed).find((f) => f.endsWith('.node'))!
  unlinkSync(join(installed, addon))
  const noCargo = spawnSync(process.execPath, [join(installed, 'scripts', 'install.js')], {
    encoding: 'utf8',
    env: { ...process.env, PATH: '/nonexistent' },
  })
  t.is(noCargo.status, 1)
  t.regex(noCargo.stderr, /no prebuilt binary.*\n.*cargo \(the Rust toolchain\) is not installed/)
  // With cargo: built from the bundled sources (reusing the repo's build cache to keep this quick).
  const build = spawnSync(process.execPath, [join(installed, 'scripts', 'install.js')], {
    encoding: 'utf8',
    env: { ...process.env, CARGO_TARGET_DIR: join(repo, 'target') },
  })
  t.is(build.status, 0, build.stderr)
  t.true(existsSync(join(installed, addon)), 'the addon was rebuilt from source')
  t.false(existsSync(join(installed, 'target')))
  t.like(await run('consumer.cjs'), { reply: 'echo: hello from cjs' })
  await peer.close()
})
