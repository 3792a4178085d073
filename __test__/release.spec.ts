// The release workflow (.github/workflows/release.yml) cannot run here: it needs GitHub's macOS,
// Windows and arm64 runners. What can be checked here is that it keeps up with the package: every
// napi target is built and tested on its platform and every npm/<platform> package is published,
// with the scripts that the rest of the suite tests (build-dist.js, stage-package.js), the glibc
// floor of build-dist.js, and the parts of `npm test`. Plain text and regular expressions: a job is
// the text from its `  name:` line under `jobs:` to the next one.
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'ava'

const repo = fileURLToPath(new URL('..', import.meta.url))
const read = (file: string) => readFileSync(join(repo, file), 'utf8')
const workflow = read('.github/workflows/release.yml')
const { name, napi, scripts } = JSON.parse(read('package.json'))
const targets: string[] = napi.targets
const platforms = readdirSync(join(repo, 'npm'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort()

/** The text of one job of the workflow. */
function job(id: string): string {
  const jobs = workflow.slice(workflow.search(/^jobs:$/m))
  const starts = [...jobs.matchAll(/^ {2}([\w-]+):\s*$/gm)]
  const at = starts.findIndex((m) => m[1] === id)
  if (at < 0) throw new Error(`release.yml has no job ${id}`)
  return jobs.slice(starts[at].index, starts[at + 1]?.index ?? jobs.length)
}

/** The build matrix entries: `- target: …` followed by `platform: …` and `host: …`. */
const builds = [...job('build').matchAll(/- target: (\S+)\s+platform: (\S+)\s+host: (\S+)/g)].map(([, target, platform, host]) => ({
  target,
  platform,
  host,
}))

test('every napi target is built, once, into the platform package that npm/ has for it', (t) => {
  t.deepEqual(builds.map((b) => b.target).sort(), [...targets].sort(), 'build matrix targets = package.json napi.targets')
  t.deepEqual(builds.map((b) => b.platform).sort(), platforms, 'build matrix platforms = npm/ directories')
  for (const { target, platform } of builds) {
    // The platform package's os/cpu/libc must be those of the triple it is built for.
    const pkg = JSON.parse(read(join('npm', platform, 'package.json')))
    const [arch, , os, abi] = target.split('-')
    t.deepEqual(pkg.cpu, [{ x86_64: 'x64', aarch64: 'arm64' }[arch]], `${target} -> ${platform}: cpu`)
    t.deepEqual(pkg.os, [{ linux: 'linux', darwin: 'darwin', windows: 'win32' }[os]], `${target} -> ${platform}: os`)
    t.deepEqual(pkg.libc, abi === 'gnu' ? ['glibc'] : abi === 'musl' ? ['musl'] : undefined, `${target} -> ${platform}: libc`)
  }
  t.regex(job('build'), /targets: \$\{\{ matrix\.settings\.target \}\}/, 'rustup adds the target')
})

test('the build runs scripts/build-dist.js per target, checks the glibc floor, uploads the binary', (t) => {
  const build = job('build')
  t.regex(build, /run: node scripts\/build-dist\.js --target \$\{\{ matrix\.settings\.target \}\}/)
  t.regex(build, /pip install .*-r requirements-dev\.txt/, 'cargo-zigbuild and zig for the Linux targets')
  t.regex(build, /npm ci --ignore-scripts/)
  const floor = /GLIBC_FLOOR = '([\d.]+)'/.exec(read('scripts/build-dist.js'))?.[1]
  t.truthy(floor, 'scripts/build-dist.js has GLIBC_FLOOR')
  const check = /- name: Check the glibc floor[\s\S]*?(?=\n {6}- )/.exec(build)?.[0] ?? ''
  t.regex(check, /if: endsWith\(matrix\.settings\.target, '-linux-gnu'\)/, 'on every gnu target')
  t.regex(check, /GLIBC_/)
  t.true(check.includes(`!= ${floor}`) && check.includes(`"$newest" ${floor}`), `compared with build-dist.js's floor, ${floor}`)
  t.regex(build, /path: \|\n\s+npm\/\$\{\{ matrix\.settings\.platform \}\}\/redial-ws\.\$\{\{ matrix\.settings\.platform \}\}\.node\n\s+npm\/\$\{\{ matrix\.settings\.platform \}\}\/LICENSE\n\s+npm\/\$\{\{ matrix\.settings\.platform \}\}\/THIRD_PARTY_LICENSES\.txt\n/)
  t.is(name, 'redial-ws', 'the workflow spells the binary and package names out')
})

test('every platform package is smoke-tested on its own platform, on Node 20, 22 and 24', (t) => {
  const testJob = job('test')
  const entries = [...testJob.matchAll(/- platform: (\S+)\s+runner: (\S+)(?:\s+docker: (\S+))?/g)].map(([, platform, runner, docker]) => ({
    platform,
    runner,
    docker,
  }))
  t.deepEqual(entries.map((e) => e.platform).sort(), platforms)
  for (const { platform, runner, docker } of entries) {
    const arm = platform.includes('-arm64')
    if (platform.startsWith('linux-')) t.is(runner, arm ? 'ubuntu-24.04-arm' : 'ubuntu-latest', platform)
    if (platform.endsWith('-musl')) t.is(docker, arm ? 'linux/arm64' : 'linux/amd64', `${platform} runs in node:*-alpine`)
    else t.falsy(docker, platform)
    if (platform === 'win32-arm64-msvc') t.is(runner, 'windows-11-arm')
    if (platform.startsWith('darwin-')) t.is(runner.endsWith('-intel'), !arm, `${platform} on ${runner}`)
  }
  t.regex(testJob, /node: \['20', '22', '24'\]/)
  t.regex(testJob, /node:\$\{\{ matrix\.node \}\}-alpine/)
  t.regex(testJob, /smoke\.cjs pack /)
  t.regex(testJob, /smoke\.cjs" run /)
  t.regex(read('.github/release/smoke.cjs'), /scripts', 'stage-package\.js'/, 'the smoke test stages with scripts/stage-package.js')
})

test('the linux-x64 suite runs every part of `npm test` but build:dist, against the release binary', (t) => {
  const suite = job('suite')
  const parts = [...String(scripts.test).matchAll(/npm run ([\w:-]+)/g)].map((m) => m[1])
  t.true(parts.includes('build:dist') && parts.length > 3, scripts.test)
  for (const part of parts.filter((p) => p !== 'build:dist')) t.regex(suite, new RegExp(`run: npm run ${part}\\n`), part)
  t.regex(suite, /name: bindings-linux-x64-gnu\s+path: npm\/linux-x64-gnu/)
  t.regex(suite, /needs: build/)
})

test('publish: every platform package, then the staged main package, only on a pushed v* tag', (t) => {
  const publish = job('publish')
  const listed = /PLATFORMS: >-\n([\s\S]*?)\n {4}steps:/.exec(publish)?.[1].split(/\s+/).filter(Boolean) ?? []
  t.deepEqual([...listed].sort(), platforms, 'PLATFORMS = npm/ directories')
  t.deepEqual(listed.slice(0, 4).sort(), platforms.filter((p) => p.startsWith('linux-')))
  t.regex(publish, /needs: \[check, build, test, suite\]/)
  t.regex(publish, /run: node scripts\/stage-package\.js/)
  t.regex(publish, /run: node \.github\/release\/preflight\.cjs/, 'the tag is checked against package.json before publishing')
  const loop = publish.indexOf('publish "npm/$p"')
  const main = publish.indexOf('publish dist/redial-ws')
  t.true(loop > 0 && main > loop, 'the platform packages first, the main package last')
  t.regex(publish, /for f in "redial-ws\.\$p\.node" LICENSE THIRD_PARTY_LICENSES\.txt; do\s+mv "artifacts\/bindings-\$p\/\$f" "npm\/\$p\/"/, 'the licences are published with the binary')
  t.regex(publish, /DRY_RUN: \$\{\{ github\.event_name != 'push' \}\}/)
  t.regex(publish, /if \[ "\$DRY_RUN" = true \]; then flags\+=\(--dry-run\); else flags\+=\(--provenance\); fi/)
  t.regex(publish, /--access public/)
  t.regex(publish, /id-token: write/)
  t.regex(workflow, /^on:\n {2}push:\n {4}tags:\n {6}- 'v\*'\n {2}workflow_dispatch:/m)
  t.regex(job('build'), /needs: check/)
})

test("the workflow's own scripts and inputs exist", (t) => {
  for (const file of [...workflow.matchAll(/(?:node |-r )((?:\.github|scripts)\/[\w./-]+\.c?js|requirements-dev\.txt)/g)].map((m) => m[1]))
    t.true(existsSync(join(repo, file)), file)
  t.true(existsSync(join(repo, 'docs', 'releasing.md')))
})
