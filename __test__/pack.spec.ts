// Packaging, as a user meets it: the main package (staged as it is published) and the
// linux-x64-gnu platform package from `npm run build:dist`, packed, installed into a brand-new
// project with npm's defaults (which block dependencies' install scripts: the packages need
// none); the binary loads from the platform package; strict nodenext TypeScript (5 and 7) and
// CJS, ESM and TS consumers run against a local server. Then what goes wrong: the platform
// package missing or broken (an error that names the platform, the cause and the fix), and a
// build from the bundled sources.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'ava'

import { wsServer } from './helpers.js'

const repo = fileURLToPath(new URL('..', import.meta.url))
const npm = (cwd: string, ...args: string[]) =>
  execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
const distBinary = join(repo, 'npm', 'linux-x64-gnu', 'redial-ws.linux-x64-gnu.node')
const { version, napi } = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8'))

/** The highest GLIBC_x.y symbol version a shared object needs (objdump -T). */
function newestGlibc(file: string): string {
  const symbols = execFileSync('objdump', ['-T', file], { encoding: 'utf8' })
  const versions = [...symbols.matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])])
  versions.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  return versions.length ? versions[versions.length - 1].join('.') : 'none'
}

test('the distributable linux-x64-gnu binary needs at most GLIBC_2.17 (npm run build:dist)', (t) => {
  t.true(existsSync(distBinary), 'npm/linux-x64-gnu has no binary: run `npm run build:dist`')
  const newest = newestGlibc(distBinary)
  const [major, minor] = newest.split('.').map(Number)
  t.true(major === 2 && minor <= 17, `needs GLIBC_${newest}`)
  // The check itself can tell: the development build links against this machine's glibc.
  t.not(newestGlibc(join(repo, 'redial-ws.linux-x64-gnu.node')), 'none')
})

test('the distributable binary has none of the hooks the tests use (the testing feature); the development build has them', (t) => {
  const exportsOf = (file: string) => Object.keys(createRequire(import.meta.url)(file) as object)
  const dist = exportsOf(distBinary)
  t.true(dist.includes('clientStats'), dist.join(', '))
  t.deepEqual(dist.filter((name) => name.startsWith('testing')), [])
  t.true(exportsOf(join(repo, 'redial-ws.linux-x64-gnu.node')).includes('testingPanicDriver'))
})

test('a platform package per napi target, at the main version, with os/cpu/libc for npm to pick one', (t) => {
  t.is(napi.targets.length, 8)
  const names = ['linux-x64-gnu', 'linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl', 'darwin-x64', 'darwin-arm64', 'win32-x64-msvc', 'win32-arm64-msvc']
  for (const name of names) {
    const pkg = JSON.parse(readFileSync(join(repo, 'npm', name, 'package.json'), 'utf8'))
    const [os, cpu, libc] = name.split('-')
    t.like(pkg, { name: `redial-ws-${name}`, version, main: `redial-ws.${name}.node`, os: [os], cpu: [cpu] }, name)
    t.deepEqual(pkg.libc, libc === 'gnu' ? ['glibc'] : libc === 'musl' ? ['musl'] : undefined, name)
    t.deepEqual(pkg.files, [`redial-ws.${name}.node`, 'LICENSE', 'THIRD_PARTY_LICENSES.txt'])
  }
  t.deepEqual(readdirSync(join(repo, 'npm')).sort(), [...names].sort())
  // The loader's list of published platforms (which decides its advice) is the same list.
  const loader = readFileSync(join(repo, 'lib', 'native.js'), 'utf8')
  const published = /const PUBLISHED = \[([^\]]*)\]/.exec(loader)![1].match(/'[^']+'/g)!.map((q) => q.slice(1, -1))
  t.deepEqual(published, names)
})

test.serial('packed main + platform package → fresh project, scripts blocked → loads from the platform package; consumers run; failures explained', async (t) => {
  // npm pack and install, two TypeScript compilers and a cargo build with LTO from the bundled
  // sources (a minute or two on a fast machine), all synchronous: on a slow one, past ava's 2 min. No
  // longer than that: while it runs, ava's inactivity timeout cannot end another file's test that hangs.
  t.timeout(6 * 60_000)
  const dir = mkdtempSync(join(tmpdir(), 'redial-consumer-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const staged = execFileSync(process.execPath, [join(repo, 'scripts', 'stage-package.js')], { encoding: 'utf8' }).trim()
  const manifest = JSON.parse(readFileSync(join(staged, 'package.json'), 'utf8'))
  t.is(manifest.scripts, undefined, 'no lifecycle scripts: nothing for npm to block')
  t.is(Object.keys(manifest.optionalDependencies).length, 8)
  t.is(manifest.optionalDependencies['redial-ws-linux-x64-gnu'], version)

  const main = npm(staged, 'pack', '--pack-destination', dir).trim().split('\n').pop()!
  const platform = npm(join(repo, 'npm', 'linux-x64-gnu'), 'pack', '--pack-destination', dir).trim().split('\n').pop()!
  const listing = execFileSync('tar', ['-tzf', join(dir, main)], { encoding: 'utf8' })
  t.notRegex(listing, /\.node\n/, 'no binary in the main package')
  t.regex(listing, /package\/src\/lib\.rs/, 'the Rust sources are in the tarball (build from source)')
  t.regex(listing, /package\/scripts\/build-from-source\.js/)
  t.regex(listing, /package\/LICENSE/)
  t.notRegex(listing, /package\/target\/|package\/__test__\/|package\/npm\//)
  t.regex(execFileSync('tar', ['-tzf', join(dir, platform)], { encoding: 'utf8' }), /package\/redial-ws\.linux-x64-gnu\.node/)
  // The binary's licences go with it: ours, and those of every crate linked into it.
  const platformText = (file: string) => execFileSync('tar', ['-xOzf', join(dir, platform), `package/${file}`], { encoding: 'utf8' })
  t.is(platformText('LICENSE'), readFileSync(join(repo, 'LICENSE'), 'utf8'))
  const notices = platformText('THIRD_PARTY_LICENSES.txt')
  const { linkedCrates } = createRequire(import.meta.url)('../scripts/third-party-licenses.js') as {
    linkedCrates: (target: string) => Array<{ name: string; version: string }>
  }
  const linked = linkedCrates('x86_64-unknown-linux-gnu')
  for (const name of ['napi', 'tokio', 'rustls', 'ring', 'flate2', 'zlib-rs', 'tungstenite']) t.true(linked.some((c) => c.name === name), name)
  t.false(linked.some((c) => c.name === 'proptest'), 'no dev dependency')
  for (const crate of linked) t.true(notices.includes(`\n  ${crate.name} ${crate.version}: `), crate.name)
  t.regex(notices, /^ {2}ring 0\.17\.\d+: Apache-2\.0 AND ISC$/m)
  t.regex(notices, /Apache License\s+Version 2\.0/)
  t.regex(notices, /Copyright \(c\) 2020-present LongYinan/)

  npm(dir, 'init', '-y')
  const typescript = JSON.parse(npm(repo, 'ls', 'typescript', '--json')).dependencies.typescript.version
  // npm's defaults: install scripts of dependencies are not run (npm 11 blocks them).
  npm(dir, 'install', join(dir, platform), join(dir, main), `typescript@${typescript}`, '@types/node@20')
  const installed = join(dir, 'node_modules', 'redial-ws')
  const loaded = spawnSync(process.execPath, ['-e', "require('redial-ws'); console.log(JSON.stringify(Object.keys(require.cache).filter((f) => f.endsWith('.node'))))"], {
    cwd: dir,
    encoding: 'utf8',
  })
  t.is(loaded.status, 0, loaded.stderr)
  t.deepEqual(JSON.parse(loaded.stdout), [join(dir, 'node_modules', 'redial-ws-linux-x64-gnu', 'redial-ws.linux-x64-gnu.node')])

  for (const f of ['consumer.mts', 'consumer.cjs', 'consumer.mjs']) cpSync(join(repo, '__test__', 'consumer', f), join(dir, f))
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, outDir: 'out', types: ['node'] }, files: ['consumer.mts'] }),
  )
  const tsc7 = spawnSync(process.execPath, [join(repo, 'node_modules', 'typescript-7', 'bin', 'tsc'), '-p', dir, '--noEmit'], { encoding: 'utf8' })
  t.is(tsc7.status, 0, `TypeScript 7: ${tsc7.stdout}${tsc7.stderr}`)
  const tsc = spawnSync(process.execPath, [join(dir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8' })
  t.is(tsc.status, 0, tsc.stdout + tsc.stderr)
  // The oldest @types/node the package declares it works with (skipLibCheck: that one's own files
  // predate this TypeScript's typed arrays).
  const typesFloor = /^>=(\d+\.\d+\.\d+)$/.exec(manifest.peerDependencies['@types/node'])![1]
  const floor = join(dir, 'types-floor')
  mkdirSync(floor)
  // A project of its own: npm installs into the nearest package.json's directory.
  writeFileSync(join(floor, 'package.json'), '{ "private": true }\n')
  npm(floor, 'install', `@types/node@${typesFloor}`)
  writeFileSync(
    join(floor, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: true, typeRoots: ['./node_modules/@types'], types: ['node'] },
      files: ['../consumer.mts'],
    }),
  )
  const atFloor = spawnSync(process.execPath, [join(dir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', floor], { encoding: 'utf8' })
  t.is(atFloor.status, 0, `@types/node@${typesFloor}: ${atFloor.stdout}${atFloor.stderr}`)

  const peer = await wsServer((s) => s.on('message', (d) => s.send(`echo: ${d}`)))
  t.teardown(() => peer.close())
  // Asynchronous: the server lives in this process and must keep answering.
  const run = async (file: string) => {
    const child = spawn(process.execPath, [join(dir, file), peer.url], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    const [code] = await once(child, 'close')
    clearTimeout(killer)
    return { code, out, err, result: code === 0 ? JSON.parse(out.trim().split('\n').pop()!) : undefined }
  }
  t.like((await run('consumer.cjs')).result, { reply: 'echo: hello from cjs', open: 0 })
  t.like((await run('consumer.mjs')).result, { reply: 'echo: hello from esm', open: 0 })
  t.like((await run(join('out', 'consumer.mjs'))).result, { reply: 'echo: hello from ts', open: 0, sent: 1, result: { discarded: 0 } })

  // A broken binary in the platform package: the real cause, not "cannot find module".
  const platformBinary = join(dir, 'node_modules', 'redial-ws-linux-x64-gnu', 'redial-ws.linux-x64-gnu.node')
  writeFileSync(platformBinary, 'not a shared object')
  const broken = await run('consumer.cjs')
  t.is(broken.code, 1)
  t.regex(broken.err, /cannot load the native binary for linux-x64-gnu \(Node v\d+/)
  t.regex(broken.err, /- redial-ws-linux-x64-gnu: .*(invalid ELF header|too short)/)
  t.regex(broken.err, /code: 'ERR_NATIVE_BINDING'/)

  // The platform package missing (npm --omit=optional, a lockfile from another platform): the
  // platform, the package and the command that fixes it.
  rmSync(join(dir, 'node_modules', 'redial-ws-linux-x64-gnu'), { recursive: true })
  const missing = await run('consumer.cjs')
  t.is(missing.code, 1)
  t.regex(missing.err, /redial-ws-linux-x64-gnu is not installed/)
  t.regex(missing.err, new RegExp(`Fix:\\n  npm install --save-optional redial-ws-linux-x64-gnu@${version.replace(/\./g, '\\.')}\\n`))
  t.regex(missing.err, /delete node_modules and package-lock\.json, then npm install/)
  t.regex(missing.err, /build it from source: node ".*build-from-source\.js"/)
  t.notRegex(missing.err, /npm has a bug|Cannot find native binding/, "not napi-rs's generic message")

  // Building from the bundled sources: without cargo a clear message; with it (reusing the
  // repo's build cache to keep this quick) the addon next to package.json, no target/ left.
  const noCargo = spawnSync(process.execPath, [join(installed, 'scripts', 'build-from-source.js')], {
    encoding: 'utf8',
    env: { ...process.env, PATH: '/nonexistent' },
  })
  t.is(noCargo.status, 1)
  t.regex(noCargo.stderr, /cannot build from source for linux-x64:\ncargo \(the Rust toolchain\) is not installed/)
  // Inside a project whose root is a Cargo workspace (a Tauri app, a Rust and Node monorepo),
  // which cargo would otherwise take the package for a member of.
  writeFileSync(join(dir, 'Cargo.toml'), '[workspace]\nmembers = []\n')
  const build = spawnSync(process.execPath, [join(installed, 'scripts', 'build-from-source.js')], {
    encoding: 'utf8',
    env: { ...process.env, CARGO_TARGET_DIR: join(repo, 'target') },
  })
  t.is(build.status, 0, build.stderr)
  t.true(existsSync(join(installed, 'redial-ws.linux-x64-gnu.node')), 'the addon was built from source')
  t.false(existsSync(join(installed, 'target')))
  t.like((await run('consumer.cjs')).result, { reply: 'echo: hello from cjs' })
})
