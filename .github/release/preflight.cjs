#!/usr/bin/env node
'use strict'
// Release preflight, run by .github/workflows/release.yml before anything is built and again
// before anything is published (and runnable locally: `node .github/release/preflight.cjs`).
// Fails, with GitHub annotations, when the packages are not ready to publish:
//   - package.json napi.targets and the npm/<platform>/ directories disagree (a target without a
//     platform package, or the reverse), or a platform package has another name or version;
//   - PLATFORMS (the publish job's list, when given) is not exactly the npm/<platform>/ directories;
//   - on a tag push: the tag is not v<package.json version>;
//   - a manifest's `repository` is not this GitHub repository: npm rejects a publish with
//     provenance (E422) when package.json's repository.url does not match the repository that
//     built it. An error on a tag push, a warning on a dry run.
// Prints the version and the npm dist-tag it will be published under: latest (npm's default, which
// npm refuses when a higher version is already published), or next for a prerelease such as
// 1.2.0-rc.1 (npm refuses to publish a prerelease without a tag).

const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..', '..')
const env = process.env
const release = env.GITHUB_EVENT_NAME === 'push' && (env.GITHUB_REF ?? '').startsWith('refs/tags/')
const errors = []
const warnings = []

/** Rust target triple -> napi-rs platform name, as `napi create-npm-dirs` names npm/<platform>/. */
function platformOf(triple) {
  const [cpu, , os, abi] = triple.split('-')
  const arch = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' }[cpu] ?? cpu
  if (os === 'darwin') return `darwin-${arch}`
  if (os === 'windows') return `win32-${arch}-${abi}`
  return `${os}-${arch}${abi ? `-${abi}` : ''}`
}

/** github.com/owner/name from the forms npm accepts for `repository`, or '' if none. */
function githubRepo(repository) {
  let url = typeof repository === 'string' ? repository : (repository?.url ?? '')
  url = url.trim().replace(/^git\+/, '').replace(/\.git$/, '').replace(/\/$/, '')
  if (/^github:/.test(url)) url = `github.com/${url.slice('github:'.length)}`
  else if (/^[\w.-]+\/[\w.-]+$/.test(url)) url = `github.com/${url}`
  url = url.replace(/^(?:https?|ssh|git):\/\/(?:git@)?/, '').replace(/^git@github\.com:/, 'github.com/')
  return url.toLowerCase()
}

const read = (file) => JSON.parse(fs.readFileSync(path.join(root, file), 'utf8'))
const main = read('package.json')
const { version } = main
const expected = new Map(main.napi.targets.map((triple) => [platformOf(triple), triple]))
const dirs = fs
  .readdirSync(path.join(root, 'npm'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort()

for (const [platform, triple] of expected)
  if (!dirs.includes(platform)) errors.push(`napi.targets has ${triple} but there is no npm/${platform}/ (npx napi create-npm-dirs)`)
const manifests = [['package.json', main]]
for (const dir of dirs) {
  if (!expected.has(dir)) errors.push(`npm/${dir}/ is not one of package.json napi.targets`)
  const pkg = read(path.join('npm', dir, 'package.json'))
  manifests.push([`npm/${dir}/package.json`, pkg])
  if (pkg.name !== `${main.name}-${dir}`) errors.push(`npm/${dir}/package.json is named ${pkg.name}, not ${main.name}-${dir}`)
  if (pkg.version !== version) errors.push(`npm/${dir}/package.json is at ${pkg.version}, package.json at ${version}: run \`npx napi version\``)
}

if (env.PLATFORMS !== undefined) {
  const listed = env.PLATFORMS.split(/\s+/).filter(Boolean).sort()
  if (listed.join(' ') !== dirs.join(' '))
    errors.push(`the publish job's PLATFORMS (${listed.join(' ')}) are not the npm/ directories (${dirs.join(' ')})`)
}

if (release) {
  const tag = env.GITHUB_REF_NAME
  if (tag !== `v${version}`) errors.push(`the tag ${tag} is not v${version} (package.json): tag the commit that has the version, or bump it`)
}

const repo = env.GITHUB_REPOSITORY ? `github.com/${env.GITHUB_REPOSITORY}`.toLowerCase() : null
const unrelated = []
for (const [file, pkg] of manifests) {
  const found = githubRepo(pkg.repository)
  if (!found) unrelated.push(`${file} (none)`)
  else if (repo && found !== repo) unrelated.push(`${file} (${found})`)
}
if (unrelated.length)
  (release ? errors : warnings).push(
    `"repository" must name ${repo ?? 'the GitHub repository'} in ${unrelated.join(', ')}: npm rejects a publish with ` +
      'provenance (E422) unless repository.url is the repository that built it (docs/releasing.md)',
  )

for (const w of warnings) console.log(`::warning::${w}`)
for (const e of errors) console.log(`::error::${e}`)
const distTag = version.includes('-') ? 'next' : 'latest'
console.log(
  `preflight: ${main.name}@${version} (dist-tag ${distTag}), ${dirs.length} platform packages, ${release ? `release of ${env.GITHUB_REF_NAME}` : 'dry run'}: ` +
    (errors.length ? `${errors.length} error(s)` : 'ok'),
)
if (env.GITHUB_OUTPUT) fs.appendFileSync(env.GITHUB_OUTPUT, `version=${version}\ndist_tag=${distTag}\n`)
process.exit(errors.length ? 1 : 0)
